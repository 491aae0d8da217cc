//! The model's inputs: the seeded randomness, the request cost
//! distributions, and the pre-generated workloads every policy replays.

use fulcrum_test_support::fastrand::Rng;

/// The distributions the model draws from, on the workspace's seeded PRNG
/// (`fulcrum_test_support::rng`).
pub trait Draw {
    /// Uniform in (0, 1]: never 0, so its logarithm and negative powers
    /// are finite.
    fn open_unit(&mut self) -> f64;

    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64;

    /// Pareto with shape `alpha` (> 1) and the given mean.
    fn pareto(&mut self, mean: f64, alpha: f64) -> f64;

    /// The equilibrium (residual life) distribution of a Pareto(mean, alpha)
    /// lifetime: density P(L > x) / E[L]. Inverse CDF, piecewise.
    fn pareto_residual(&mut self, mean: f64, alpha: f64) -> f64;
}

impl Draw for Rng {
    fn open_unit(&mut self) -> f64 {
        1.0 - self.f64()
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.open_unit().ln() * mean
    }

    fn pareto(&mut self, mean: f64, alpha: f64) -> f64 {
        let xm = mean * (alpha - 1.0) / alpha;
        xm * self.open_unit().powf(-1.0 / alpha)
    }

    fn pareto_residual(&mut self, mean: f64, alpha: f64) -> f64 {
        let xm = mean * (alpha - 1.0) / alpha;
        let u = self.f64();
        let knee = (alpha - 1.0) / alpha;
        if u < knee {
            u * mean
        } else {
            xm * (alpha * (1.0 - u)).powf(-1.0 / (alpha - 1.0))
        }
    }
}

/// A request cost distribution.
#[derive(Clone, Copy, Debug)]
pub enum Dist {
    /// Exponential, for the closed-form checks.
    #[cfg(test)]
    Exp {
        mean: f64,
    },
    Pareto {
        mean: f64,
        alpha: f64,
    },
}

impl Dist {
    pub fn sample(self, rng: &mut Rng) -> f64 {
        match self {
            #[cfg(test)]
            Dist::Exp { mean } => rng.exp(mean),
            Dist::Pareto { mean, alpha } => rng.pareto(mean, alpha),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Req {
    /// Arrival time, µs.
    pub at: f64,
    /// Service cost, µs.
    pub cost: f64,
    /// Connection index.
    pub conn: u32,
}

/// Pre-generated arrivals, replayed identically for every policy.
pub struct Workload {
    /// Connection arrival times, sorted.
    pub conn_at: Vec<f64>,
    /// When each connection closes (for `exact`'s open-connection counts).
    pub conn_close: Vec<f64>,
    /// Requests sorted by arrival time.
    pub reqs: Vec<Req>,
    /// Measured window: requests arriving in it count, utilisation is over it.
    pub window: (f64, f64),
}

/// Parameters of the default workload (see the module docs).
#[derive(Clone, Debug)]
pub struct Shape {
    pub load: f64,
    pub mean_us: f64,
    pub alpha: f64,
    pub life_alpha: f64,
    pub conn_requests: f64,
    pub conn_share: f64,
}

impl Workload {
    /// The heavy-tailed connection workload for `workers` workers with about
    /// `requests` measured requests.
    pub fn connections(shape: &Shape, workers: usize, requests: usize, seed: u64) -> Self {
        let mut rng = fulcrum_test_support::rng(seed);
        let cost = Dist::Pareto {
            mean: shape.mean_us,
            alpha: shape.alpha,
        };
        let lambda = shape.load * workers as f64 / shape.mean_us; // requests / µs
        let per_conn_rate = shape.conn_share / shape.mean_us;
        let mean_life = shape.conn_requests / per_conn_rate;
        let conn_rate = lambda / shape.conn_requests;
        let warm = 2.0 * mean_life;
        let end = warm + requests as f64 / lambda;

        // (arrival, lifetime): the stationary population open at t = 0, then
        // Poisson arrivals.
        let mut conns: Vec<(f64, f64)> = Vec::new();
        let open_at_zero = conn_rate * mean_life;
        let mut x = rng.exp(1.0);
        while x < open_at_zero {
            conns.push((0.0, rng.pareto_residual(mean_life, shape.life_alpha)));
            x += rng.exp(1.0);
        }
        let mut t = rng.exp(1.0 / conn_rate);
        while t < end {
            conns.push((t, rng.pareto(mean_life, shape.life_alpha)));
            t += rng.exp(1.0 / conn_rate);
        }

        let mut reqs = Vec::with_capacity(requests + requests / 4);
        let mut conn_at = Vec::with_capacity(conns.len());
        let mut conn_close = Vec::with_capacity(conns.len());
        for (k, &(at, life)) in conns.iter().enumerate() {
            let close = (at + life).min(end);
            conn_at.push(at);
            conn_close.push(close);
            let mut s = at + rng.exp(1.0 / per_conn_rate);
            while s < close {
                reqs.push(Req {
                    at: s,
                    cost: cost.sample(&mut rng),
                    conn: k as u32,
                });
                s += rng.exp(1.0 / per_conn_rate);
            }
        }
        // Stable: equal times keep generation order, so this is deterministic.
        reqs.sort_by(|a, b| a.at.total_cmp(&b.at));
        Workload {
            conn_at,
            conn_close,
            reqs,
            window: (warm, end),
        }
    }

    /// `n` Poisson arrivals of rate `lambda`, one request per connection:
    /// the textbook M/G/c input, for checking against closed forms.
    #[cfg(test)]
    pub fn poisson(n: usize, lambda: f64, cost: Dist, seed: u64) -> Self {
        let mut rng = fulcrum_test_support::rng(seed);
        let mut t = 0.0;
        let (mut conn_at, mut reqs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for k in 0..n {
            t += rng.exp(1.0 / lambda);
            conn_at.push(t);
            reqs.push(Req {
                at: t,
                cost: cost.sample(&mut rng),
                conn: k as u32,
            });
        }
        Workload {
            conn_close: conn_at.clone(),
            conn_at,
            reqs,
            window: (0.0, t),
        }
    }
}
