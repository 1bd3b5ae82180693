//! The store's file system: a loop-mounted ext4 image of a fixed size (root only), so that a
//! ballast file can fill it for a minute and be removed; otherwise a plain folder and no
//! full-disk fault.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub(super) struct Disk {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
    pub(super) data_dir: PathBuf,
    /// Why the disk cannot be filled, when it cannot.
    pub(super) no_full_disk: Option<String>,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Disk {
    pub(super) fn prepare(dir: &Path, mib: u64) -> Result<Disk> {
        let image = dir.join("store.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount)?;
        let mut disk = Disk {
            data_dir: mount.join("data"),
            image,
            mount,
            mounted: false,
            no_full_disk: None,
        };
        let made = run(Command::new("truncate")
            .arg("-s")
            .arg(format!("{mib}M"))
            .arg(&disk.image))
        .and_then(|()| {
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&disk.image))
        })
        .and_then(|()| {
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&disk.image)
                .arg(&disk.mount))
        });
        match made {
            Ok(()) => disk.mounted = true,
            Err(e) => disk.no_full_disk = Some(format!("no loop-mounted file system ({e:#})")),
        }
        Ok(disk)
    }

    /// Fills the file system but for a few hundred KiB, with ballast files (a file's own
    /// metadata needs room too, so a first one a little short and then smaller ones); the
    /// bytes left.
    pub(super) fn fill(&self) -> Result<u64> {
        for i in 0..8 {
            let avail = self.available()?;
            if avail < 512 * 1024 {
                break;
            }
            let size = avail - (avail / 64).max(256 * 1024);
            let _ = run(Command::new("fallocate")
                .arg("-l")
                .arg(size.to_string())
                .arg(self.mount.join(format!("ballast{i}"))));
        }
        self.available()
    }

    pub(super) fn free(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.mount)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("ballast") {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    fn available(&self) -> Result<u64> {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mount)
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("cannot read df's answer")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
