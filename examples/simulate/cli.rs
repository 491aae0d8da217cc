//! The command line.

use crate::model::Shape;
use crate::sim::Knobs;

pub struct Args {
    pub seed: u64,
    pub requests: usize,
    pub workers: Vec<usize>,
    pub shape: Shape,
    pub knobs: Knobs,
}

pub const USAGE: &str = "usage: simulate [--load 0.7] [--seed N] [--requests N] \
[--workers 8,16,64,256] [--alpha 2.0] [--mean-us 50] [--life-alpha 1.5] \
[--conn-requests 20] [--conn-share 0.02] [--lock-us 2] [--rescue-us 100] [--cq-depth 8]";

pub fn parse_args() -> Result<Args, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
    }
    let mut a = Args {
        seed: 1,
        requests: 5_000_000,
        workers: vec![8, 16, 64, 256],
        shape: Shape {
            load: 0.7,
            mean_us: 50.0,
            alpha: 2.0,
            life_alpha: 1.5,
            conn_requests: 20.0,
            conn_share: 0.02,
        },
        knobs: Knobs::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--load" => a.shape.load = num(f, it.next())?,
            "--seed" => a.seed = num(f, it.next())?,
            "--requests" => a.requests = num(f, it.next())?,
            "--workers" => {
                let v: String = num(f, it.next())?;
                a.workers = v
                    .split(',')
                    .map(|s| num(f, Some(s.trim().to_string())))
                    .collect::<Result<_, _>>()?;
            }
            "--alpha" => a.shape.alpha = num(f, it.next())?,
            "--mean-us" => a.shape.mean_us = num(f, it.next())?,
            "--life-alpha" => a.shape.life_alpha = num(f, it.next())?,
            "--conn-requests" => a.shape.conn_requests = num(f, it.next())?,
            "--conn-share" => a.shape.conn_share = num(f, it.next())?,
            "--lock-us" => a.knobs.lock_us = num(f, it.next())?,
            "--rescue-us" => a.knobs.rescue_us = num(f, it.next())?,
            "--cq-depth" => a.knobs.cq_depth = num(f, it.next())?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let s = &a.shape;
    if !(s.load > 0.0 && s.load < 1.0) {
        return Err("--load must be in (0, 1)".into());
    }
    if !(s.alpha > 1.0 && s.life_alpha > 1.0) {
        return Err("--alpha and --life-alpha must be > 1 (finite mean)".into());
    }
    if !(s.mean_us > 0.0 && s.conn_requests > 0.0 && s.conn_share > 0.0) {
        return Err("--mean-us, --conn-requests and --conn-share must be > 0".into());
    }
    if a.workers.is_empty() || a.workers.contains(&0) || a.requests == 0 {
        return Err("--workers and --requests must be positive".into());
    }
    if a.knobs.cq_depth == 0 || a.knobs.lock_us < 0.0 || a.knobs.rescue_us < 0.0 {
        return Err("--cq-depth must be > 0, --lock-us and --rescue-us >= 0".into());
    }
    Ok(a)
}
