// SPDX-License-Identifier: GPL-2.0

//! The tests' one random generator: ChaCha8 (the `rand` crate), seeded from a number the program
//! prints, so that a run's choices can be repeated. Each stream of a seed is independent of how
//! many numbers the others drew: the fuzzer draws operation `i` from stream `i`, a racing test
//! gives thread `k` stream `k` ([`Rng::fork`]).

use rand::rngs::ChaCha8Rng;
use rand::RngExt;
use rand::SeedableRng;

/// Stream `stream` of seed `seed`.
pub fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A generator that forks independent ones (for threads or processes): stream 0 of its seed
/// for itself, and a seed of its own for each fork.
pub struct Rng {
    seed: u64,
    rng: ChaCha8Rng,
}

impl Rng {
    /// Stream 0 of `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            seed,
            rng: stream(seed, 0),
        }
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.rng.random()
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n)
    }

    /// An independent generator for thread or process `k` (the same for the same seed and `k`,
    /// whatever this one drew).
    pub fn fork(&self, k: u64) -> Rng {
        let seed = self.seed ^ k.wrapping_add(1).wrapping_mul(0xd1b5_4a32_d192_ed03);
        Rng::new(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_sequence_and_forks_are_independent() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(5);
                move |_| r.bits()
            })
            .collect();
        let mut b = Rng::new(5);
        assert_eq!(a, (0..4).map(|_| b.bits()).collect::<Vec<_>>());
        // A fork does not depend on what its parent drew.
        let before = Rng::new(5).fork(3).bits();
        assert_eq!(b.fork(3).bits(), before);
        assert_ne!(Rng::new(5).fork(4).bits(), before);
        assert_ne!(Rng::new(6).fork(3).bits(), before);
        for n in [1, 2, 7, 1000] {
            assert!((0..100).all(|_| b.below(n) < n));
        }
    }
}
