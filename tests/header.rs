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
         #define FASTRPC_VERSION_PATCH {patch}\n\
         /** MAJOR * 10000 + MINOR * 100 + PATCH; compare with fastrpc_version_number(). */\n\
         #define FASTRPC_VERSION_NUMBER \
         ((FASTRPC_VERSION_MAJOR) * 10000 + (FASTRPC_VERSION_MINOR) * 100 + (FASTRPC_VERSION_PATCH))\n"
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

/// The header compiles as strict C11 and as C++17 (a name clash between a type and a
/// function, say, would not show in a text comparison).
#[test]
fn header_compiles_as_c_and_cpp() {
    let dir = env!("CARGO_MANIFEST_DIR");
    // Removed on drop, also when the assertion fails.
    let tmp = tempfile::Builder::new()
        .prefix("fastrpc-header-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let src = tmp.path().join("use_header.c");
    std::fs::write(
        &src,
        "#include \"fastrpc.h\"\n\
         int main(void) {\n\
           fastrpc_client_stats cs; fastrpc_server_stats ss; fastrpc_completion c;\n\
           (void)cs; (void)ss; (void)c;\n\
           return fastrpc_version() == 0 && FASTRPC_STATUS_OK == 0;\n\
         }\n",
    )
    .unwrap();
    for (compiler, args) in [
        ("cc", &["-std=c11", "-x", "c"][..]),
        ("c++", &["-std=c++17", "-x", "c++"][..]),
    ] {
        let out = std::process::Command::new(compiler)
            .args(args)
            .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
            .arg(format!("-I{dir}/include"))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e} (install gcc and g++)"));
        assert!(
            out.status.success(),
            "{compiler} rejects include/fastrpc.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
