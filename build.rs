//! Gives the shared library a SONAME (libfastrpc.so.0.MINOR while the major version is 0,
//! as cargo-c does), so programs linked against it record the ABI they were built for.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = env!("CARGO_PKG_VERSION_MAJOR");
        let minor = env!("CARGO_PKG_VERSION_MINOR");
        let soname = if major == "0" {
            format!("libfastrpc.so.0.{minor}")
        } else {
            format!("libfastrpc.so.{major}")
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
