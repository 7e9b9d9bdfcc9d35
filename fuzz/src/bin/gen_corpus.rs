//! Writes the seed corpus (src/seeds.rs) to fuzz/corpus/<target>/. Run after changing the
//! seeds: `cargo run --release --bin gen-corpus`. Existing files of other names are kept
//! (inputs added by hand or minimized from libFuzzer runs).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut n = 0;
    let mut bytes = 0;
    for (target, name, data) in fastrpc_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(&name), &data).expect("write seed");
        n += 1;
        bytes += data.len();
    }
    println!("wrote {n} seeds ({bytes} bytes) to {}", root.display());
}
