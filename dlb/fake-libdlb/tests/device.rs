//! Finding the device and the library, and falling back to software.
#![cfg(not(loom))]

mod common;

use common::{fake_lib, DevDir};
use fulcrum_dlb::{Backend, BackendKind, DlbError, Domain};

#[test]
fn a_missing_device_is_replaced_by_the_first_one_found() {
    let dev = DevDir::new(&["dlb3"]);
    let domain = Domain::builder()
        .backend(Backend::Hardware { device: 0 })
        .ignore_env()
        .library_path(fake_lib())
        .device_dir(dev.path())
        .build()
        .expect("device 3 is used instead");
    assert_eq!(domain.backend(), BackendKind::Hardware { device: 3 });
}

#[test]
fn no_device_at_all_is_device_not_found() {
    let dev = DevDir::new(&[]);
    let err = Domain::builder()
        .backend(Backend::Hardware { device: 2 })
        .ignore_env()
        .library_path("/nonexistent/libdlb.so")
        .device_dir(dev.path())
        .build()
        .expect_err("no device");
    // Checked before the library is loaded (its path is bogus here).
    match err {
        DlbError::DeviceNotFound { dir, requested } => {
            assert_eq!((dir.as_path(), requested), (dev.path(), 2));
        }
        other => panic!("expected DeviceNotFound, got {other:?}"),
    }
}

#[test]
fn a_bad_library_path_is_a_library_error_with_the_loader_message() {
    let dev = DevDir::new(&["dlb0"]);
    let err = Domain::builder()
        .backend(Backend::Hardware { device: 0 })
        .ignore_env()
        .library_path("/nonexistent/libdlb.so")
        .device_dir(dev.path())
        .build()
        .expect_err("no library");
    let msg = err.to_string();
    assert!(matches!(err, DlbError::Library { .. }), "{err:?}");
    assert!(msg.contains("/nonexistent/libdlb.so"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn a_library_without_libdlb_symbols_is_a_library_error() {
    let dev = DevDir::new(&["dlb0"]);
    let err = Domain::builder()
        .backend(Backend::Hardware { device: 0 })
        .ignore_env()
        .library_path("libc.so.6")
        .device_dir(dev.path())
        .build()
        .expect_err("libc is not libdlb");
    let msg = err.to_string();
    assert!(matches!(err, DlbError::Library { .. }), "{err:?}");
    assert!(msg.contains("dlb_open"), "{msg}");
}

#[test]
fn auto_with_no_device_uses_the_software_backend() {
    let dev = DevDir::new(&[]);
    let domain = Domain::builder()
        .backend(Backend::Auto)
        .ignore_env()
        .library_path(fake_lib())
        .device_dir(dev.path())
        .ports(2)
        .build()
        .expect("software fallback");
    assert_eq!(domain.backend(), BackendKind::Software);
}

#[test]
fn auto_with_a_device_and_the_library_uses_the_hardware_backend() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = Domain::builder()
        .backend(Backend::Auto)
        .ignore_env()
        .library_path(fake_lib())
        .device_dir(dev.path())
        .build()
        .expect("hardware");
    assert_eq!(domain.backend(), BackendKind::Hardware { device: 0 });
}
