//! The C ABI routes panics inside the library to the log hook, but a Rust program that also
//! calls it keeps its own panic hook for every other panic (its own threads, its own code).

use std::sync::{Arc, Mutex};

use fastrpc::ffi::response::{fastrpc_response_free, fastrpc_response_new};

#[test]
fn the_c_abi_keeps_the_programs_own_panic_hook() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        s.lock().unwrap().push(info.to_string());
    }));
    // The first C ABI call installs the library's hook on top of ours.
    let mut r = std::ptr::null_mut();
    fastrpc_response_new(&mut r);
    fastrpc_response_free(r);
    // A panic of the program's own: our hook sees it.
    let caught = std::thread::spawn(|| panic!("the program's own panic"))
        .join()
        .is_err();
    assert!(caught);
    let _ = std::panic::take_hook();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("the program's own panic"), "{seen:?}");
}
