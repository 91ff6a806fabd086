//! Seeded randomness for the tests: a splitmix64 generator and random
//! soups.

use weir_gol::Cell;

/// A seeded splitmix64: the same soups and splits on every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub(crate) fn soup(tam: u64, density: f64, seed: u64) -> Vec<Cell> {
    let mut rng = Rng(seed);
    let mut cells = Vec::new();
    for r in 0..tam {
        for c in 0..tam {
            if rng.chance(density) {
                cells.push((r, c));
            }
        }
    }
    cells
}
