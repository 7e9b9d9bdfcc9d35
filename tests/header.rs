//! The checked-in C header is exactly what cbindgen (the version pinned in Cargo.toml)
//! generates from the code. `FASTRPC_BLESS=1 cargo test --test header` rewrites it.

use std::path::Path;

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.');
    let (major, minor, patch) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let macros = format!(
        "\n/** The version of this header; compare with fastrpc_version(). */\n\
         #define FASTRPC_VERSION \"{version}\"\n\
         #define FASTRPC_VERSION_MAJOR {major}\n\
         #define FASTRPC_VERSION_MINOR {minor}\n\
         #define FASTRPC_VERSION_PATCH {patch}\n"
    );
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .with_after_include(macros)
        .generate()
        .expect("cbindgen failed")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/fastrpc.h");
    let want = generate();
    if std::env::var_os("FASTRPC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "include/fastrpc.h is out of date with the code: run \
         `FASTRPC_BLESS=1 cargo test --test header` and commit the result"
    );
}
