//! Every input kept for a target — the minimised corpus the fuzzer grew (`corpus/<target>/`)
//! and every input that once made a target fail (`found/<target>/`) — run through it as an
//! ordinary test, so a finding fixed stays fixed.

use std::path::Path;

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, target) in switchyard_fuzz::TARGETS {
        for folder in ["corpus", "found"] {
            let dir = root.join(folder).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let data = std::fs::read(&path).expect("a readable input");
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} fails", path.display());
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no corpus found under {}", root.display());
}
