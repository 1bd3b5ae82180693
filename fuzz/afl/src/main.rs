//! `switchyard-afl TARGET`: the fuzz target `TARGET` (see `switchyard_fuzz::TARGETS`) under
//! AFL++, which feeds it inputs on stdin.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = switchyard_fuzz::target(&name) else {
        let names: Vec<&str> = switchyard_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: switchyard-afl TARGET, one of {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
