//! Seeded randomness for the harness: a tiny generator and a Zipf sampler over clinics.
//!
//! Why not a crate: the harness needs a fast, reproducible stream per connection (a seed in
//! the report repeats a run) and one skewed distribution; splitmix64 and an inverse-CDF
//! table do both in a few lines, with no cryptographic pretence.

/// splitmix64 (Steele, Lea, Flood 2014): one add and a mix per number, good statistical
/// quality for load generation, and any seed (0 included) gives a usable stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for worker `index`, derived from the run's seed.
    pub fn for_worker(seed: u64, index: u64) -> Rng {
        let mut base = Rng(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(base.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0), by multiply-shift (no modulo bias worth the name for the
    /// sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: f64) -> bool {
        self.next_f64() * 100.0 < percent
    }
}

/// Zipf over ranks `0..n`: rank k has weight `1 / (k + 1)^s`. Exponent 0 is uniform.
///
/// Sampling is a binary search in the cumulative table (n floats), so it costs O(log n)
/// and the table is built once per run.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n` must be at least 1.
    pub fn new(n: usize, exponent: f64) -> Zipf {
        let n = n.max(1);
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of rank `k`.
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 200_000;

    fn histogram(zipf: &Zipf, seed: u64) -> Vec<usize> {
        let mut rng = Rng::new(seed);
        let mut counts = vec![0; zipf.len()];
        for _ in 0..DRAWS {
            counts[zipf.sample(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn exponent_zero_is_uniform() {
        let zipf = Zipf::new(10, 0.0);
        let counts = histogram(&zipf, 7);
        for c in counts {
            let share = c as f64 / DRAWS as f64;
            assert!((share - 0.1).abs() < 0.01, "share {share}");
        }
    }

    #[test]
    fn exponent_one_makes_a_few_clinics_hot() {
        let n = 100;
        let zipf = Zipf::new(n, 1.0);
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        assert!((zipf.probability(0) - 1.0 / harmonic).abs() < 1e-12);
        let counts = histogram(&zipf, 42);
        let share = |k: usize| counts[k] as f64 / DRAWS as f64;
        // Rank 0 gets 1/H(100) ~ 19%, twice rank 1 and ten times rank 9.
        assert!((share(0) - 1.0 / harmonic).abs() < 0.01, "{}", share(0));
        let ratio = share(0) / share(1);
        assert!((ratio - 2.0).abs() < 0.15, "rank0/rank1 = {ratio}");
        let ratio = share(0) / share(9);
        assert!((ratio - 10.0).abs() < 1.5, "rank0/rank9 = {ratio}");
        // The hottest 10% of clinics take over half the traffic.
        let top: usize = counts[..10].iter().sum();
        assert!(top as f64 / DRAWS as f64 > 0.5);
        // Every rank is reachable.
        assert!(counts.iter().all(|&c| c > 0));
    }

    #[test]
    fn samples_stay_in_range_and_seeds_repeat() {
        let zipf = Zipf::new(3, 2.5);
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        for _ in 0..10_000 {
            let x = zipf.sample(&mut a);
            assert!(x < 3);
            assert_eq!(x, zipf.sample(&mut b));
        }
        let mut r = Rng::new(0);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn worker_streams_differ() {
        let mut a = Rng::for_worker(1, 0);
        let mut b = Rng::for_worker(1, 1);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
