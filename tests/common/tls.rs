//! A test CA made with `openssl` (which `scripts/test` installs): a CA, a server certificate
//! for 127.0.0.1 and localhost, and a client certificate, as PEM files in a directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and what it signed.
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA's name (its file stem).
    pub name: String,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA `name` in `dir`, with a server and a client certificate.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let ca = TestCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509", "-days", "1"];
        args.extend(ec);
        let subject = format!("/CN={name}");
        let (key, cert) = (ca.file("ca.key"), ca.file("ca.pem"));
        args.extend([
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &key,
            "-out",
            &cert,
        ]);
        openssl(&args);
        ca.sign(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        ca.sign("client", "extendedKeyUsage=clientAuth\n");
        ca
    }

    /// `{dir}/{name}-{file}`.
    pub fn file(&self, file: &str) -> String {
        self.dir
            .join(format!("{}-{file}", self.name))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn sign(&self, who: &str, extensions: &str) {
        let (key, csr, cert, ext) = (
            self.file(&format!("{who}.key")),
            self.file(&format!("{who}.csr")),
            self.file(&format!("{who}.pem")),
            self.file(&format!("{who}.ext")),
        );
        std::fs::write(&ext, extensions).unwrap();
        let subject = format!("/CN={who}");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.file("ca.pem"),
            "-CAkey",
            &self.file("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
    }

    /// A TLS terminator (socat) with this CA's server certificate, on a free loopback port,
    /// passing connections on to the plain `upstream` (`host:port`); stopped when the
    /// returned [`super::Children`] is dropped.
    pub async fn terminator(&self, upstream: &str) -> (u16, super::Children) {
        let port = super::free_port();
        let child = super::Children::quiet(vec![
            Command::new("socat")
                .arg(format!(
                    "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                    self.file("server.pem"),
                    self.file("server.key")
                ))
                .arg(format!("TCP:{upstream}")),
        ]);
        super::wait_listening(port, "the TLS terminator listening").await;
        (port, child)
    }

    /// A client that trusts only this CA, optionally presenting its client certificate.
    pub fn client(&self, with_certificate: bool) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(self.file("ca.pem")).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder().tls_certs_only([ca]);
        if with_certificate {
            let mut pem = std::fs::read(self.file("client.pem")).unwrap();
            pem.extend(std::fs::read(self.file("client.key")).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }
}
