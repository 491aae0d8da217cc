//! The hardware backend follows libdlb's setup and teardown order, and
//! undoes a partial setup when a step fails.
#![cfg(not(loom))]

mod common;

use common::{hw_builder, DevDir, Hooks};
use fulcrum_dlb::DlbError;
// The fake's hooks are process-wide: one test at a time here.
use fulcrum_test_support::serial;

fn port_setup(links: usize) -> Vec<&'static str> {
    let mut v = vec!["dlb_create_ldb_port", "dlb_attach_ldb_port"];
    v.extend(std::iter::repeat("dlb_link_queue").take(links));
    v.extend([
        "dlb_enable_cq_epoll",
        "dlb_create_dir_port",
        "dlb_create_dir_queue",
        "dlb_attach_dir_port",
        "dlb_enable_cq_epoll",
    ]);
    v
}

fn teardown(ports: usize) -> Vec<&'static str> {
    let mut v = Vec::new();
    for _ in 0..2 * ports {
        v.extend(["dlb_disable_port", "dlb_detach_port"]);
    }
    v.extend([
        "dlb_detach_sched_domain",
        "dlb_reset_sched_domain",
        "dlb_close",
    ]);
    v
}

fn expected_order(pools: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "dlb_open",
        "dlb_get_dev_capabilities",
        "dlb_get_num_resources",
        "dlb_create_sched_domain",
        "dlb_attach_sched_domain",
    ];
    v.extend_from_slice(pools);
    v.extend(["dlb_create_ldb_queue", "dlb_create_ldb_queue"]);
    // Port 0 linked to both queues, port 1 to queue 1.
    v.extend(port_setup(2));
    v.extend(port_setup(1));
    v.extend(["dlb_launch_domain_alert_thread", "dlb_start_sched_domain"]);
    v
}

fn check_order(version: i32, pools: &[&'static str]) {
    let _serial = serial();
    let hooks = Hooks::open();
    hooks.set_version(version);
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev)
        .queues(2)
        .ports(2)
        .link(0, 0, 0)
        .link(0, 1, 3)
        .link(1, 1, 0)
        .build();
    hooks.set_version(2);
    let domain = domain.expect("domain over the fake");
    let setup = expected_order(pools);
    assert_eq!(hooks.call_log(), setup, "setup order");

    let port = domain.port(1).expect("port");
    drop(domain);
    assert_eq!(hooks.call_log(), setup, "a live port keeps the domain up");
    drop(port);
    let mut all = setup;
    all.extend(teardown(2));
    assert_eq!(hooks.call_log(), all, "teardown order");
}

#[test]
fn dlb_2_0_setup_and_teardown_follow_libdlb_order() {
    check_order(
        2,
        &["dlb_create_ldb_credit_pool", "dlb_create_dir_credit_pool"],
    );
}

#[test]
fn dlb_2_5_uses_one_combined_credit_pool() {
    check_order(3, &["dlb_create_credit_pool"]);
}

#[test]
fn a_failed_step_is_reported_and_what_was_set_up_is_undone() {
    let _serial = serial();
    let hooks = Hooks::open();
    let dev = DevDir::new(&["dlb0"]);

    hooks.fail_next("dlb_link_queue");
    let err = hw_builder(&dev).ports(2).build().expect_err("link fails");
    assert!(
        matches!(
            err,
            DlbError::Hardware {
                call: "dlb_link_queue",
                errno: libc::EINVAL,
                ..
            }
        ),
        "{err:?}"
    );
    let log = hooks.call_log();
    let fail_at = log
        .iter()
        .position(|c| c == "dlb_link_queue=-1 (EINVAL)")
        .expect("the failed call is logged");
    assert_eq!(
        &log[fail_at + 1..],
        [
            "dlb_disable_port",
            "dlb_detach_port",
            "dlb_detach_sched_domain",
            "dlb_reset_sched_domain",
            "dlb_close"
        ],
        "partial setup undone in order: {log:?}"
    );

    hooks.fail_next("dlb_start_sched_domain");
    let err = hw_builder(&dev).ports(1).build().expect_err("start fails");
    assert!(err.to_string().contains("dlb_start_sched_domain"), "{err}");
    let log = hooks.call_log();
    assert!(log.ends_with(
        &teardown(1)
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    ));

    hooks.fail_next("dlb_open");
    let err = hw_builder(&dev).build().expect_err("open fails");
    assert!(
        matches!(
            err,
            DlbError::Hardware {
                call: "dlb_open",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(hooks.call_log(), ["dlb_open=-1 (EINVAL)"]);

    // The fake is back to normal.
    hw_builder(&dev).build().expect("domain");
}

#[test]
fn too_few_device_resources_is_a_clear_error() {
    let _serial = serial();
    let hooks = Hooks::open();
    let dev = DevDir::new(&["dlb0"]);
    hooks.set_limits(2, 0, 0, 0);
    let err = hw_builder(&dev).ports(4).build().expect_err("4 ports of 2");
    hooks.set_limits(0, 0, 0, 0);
    assert!(
        matches!(
            err,
            DlbError::TooManyPorts {
                requested: 4,
                max: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        hooks.call_log(),
        [
            "dlb_open",
            "dlb_get_dev_capabilities",
            "dlb_get_num_resources",
            "dlb_close"
        ]
    );

    hooks.set_limits(0, 0, 0, 512);
    let err = hw_builder(&dev).credits(1024).build().expect_err("credits");
    hooks.set_limits(0, 0, 0, 0);
    assert!(
        matches!(
            err,
            DlbError::Credits {
                requested: 1024,
                max: 512
            }
        ),
        "{err:?}"
    );
}
