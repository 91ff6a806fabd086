//! The dense engine: every cell of every generation, 64 cells per word.
//!
//! Layout. A board of side `tam` is `tam` rows of `words = ⌈tam/64⌉` words;
//! bit `j` of word `k` is column `64k + j`. Each row is stored between a zero
//! word on the left and one on the right, and the rows between a zero row
//! above and one below, so a row is `stride = words + 2` words and a board
//! `(tam + 2) · stride` words. The padding is never written: it is the dead
//! border, and it lets the inner loop read the neighbours of the first and
//! last words without a branch. Columns `tam..64·words` of the last word
//! are padding too; every computed row is masked (`last_mask`) to keep them
//! dead.
//!
//! Stepping. Two boards, `cur` and `next`, swapped after every generation;
//! `next` is computed from `cur` read-only, row by row (`step_row`), with
//! word-wide logic (`rule`, where the counting is derived). With more than
//! one thread the rows are cut into one band per thread and the bands are
//! computed in parallel on a rayon pool built once in [`Dense::new`]; one
//! `install` covers a whole [`Life::advance`] call.
//!
//! Invariants: the padding words of both boards are zero, and so are the
//! bits of columns `≥ tam`; [`Dense::bytes_for`] is exactly what
//! [`Dense::new`] allocates.

use rayon::prelude::*;

use crate::{Cell, Life};

/// A bit-packed board with a dead border.
#[derive(Debug)]
pub struct Dense {
    tam: u64,
    /// Board rows (`tam`).
    rows: usize,
    /// Words in a row without the padding (`⌈tam/64⌉`).
    words: usize,
    /// Words in a row with the padding (`words + 2`).
    stride: usize,
    /// Keeps the columns of the last word that lie on the board.
    last_mask: u64,
    cur: Vec<u64>,
    next: Vec<u64>,
    /// `None` when running on one thread: no pool, the caller's thread works.
    pool: Option<rayon::ThreadPool>,
    /// Rows per parallel band.
    band_rows: usize,
}

impl Dense {
    /// A board of side `tam` with `cells` alive, stepped by `threads`
    /// threads (0 counts as 1). If the pool's threads cannot be spawned the
    /// board runs on the caller's thread alone; [`Dense::threads`] says so.
    ///
    /// # Panics
    ///
    /// If a cell lies outside the board, or the board does not fit in memory.
    pub fn new(tam: u64, cells: &[Cell], threads: usize) -> Dense {
        let rows = usize::try_from(tam).expect("the board's side fits in usize");
        let words = rows.div_ceil(64);
        let stride = words + 2;
        let len = (rows + 2)
            .checked_mul(stride)
            .expect("the board's size fits in usize");
        let last_mask = match tam % 64 {
            0 => !0,
            used => (1u64 << used) - 1,
        };
        let mut cur = vec![0u64; len];
        for &(r, c) in cells {
            assert!(
                r < tam && c < tam,
                "cell ({r}, {c}) is outside a board of side {tam}"
            );
            let (r, c) = (r as usize, c as usize);
            cur[(r + 1) * stride + 1 + c / 64] |= 1 << (c % 64);
        }
        let threads = threads.clamp(1, rows.max(1));
        let pool = if threads > 1 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("weir-gol-dense-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        Dense {
            tam,
            rows,
            words,
            stride,
            last_mask,
            cur,
            next: vec![0u64; len],
            band_rows: rows.div_ceil(threads).max(1),
            pool,
        }
    }

    /// Bytes of the two boards for side `tam`.
    pub fn bytes_for(tam: u64) -> u64 {
        let words = tam.div_ceil(64) + 2;
        2 * tam
            .saturating_add(2)
            .saturating_mul(words)
            .saturating_mul(8)
    }

    /// The threads that step the board.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(1, rayon::ThreadPool::current_num_threads)
    }

    /// One generation: `next` from `cur`, then swap. `parallel`: in bands
    /// on the current rayon pool.
    fn step(&mut self, parallel: bool) {
        let stride = self.stride;
        let last_mask = self.last_mask;
        let cur = &self.cur[..];
        // Board rows only: the padding rows of `next` stay zero.
        let board = &mut self.next[stride..(self.rows + 1) * stride];
        // Output row `r` reads rows `r - 1, r, r + 1`, that is padded rows
        // `r .. r + 3`.
        let row = |r: usize, out: &mut [u64]| {
            step_row(&cur[r * stride..(r + 3) * stride], out, last_mask);
        };
        if parallel {
            let band_rows = self.band_rows;
            board
                .par_chunks_mut(band_rows * stride)
                .enumerate()
                .for_each(|(band, out)| {
                    for (i, out) in out.chunks_exact_mut(stride).enumerate() {
                        row(band * band_rows + i, out);
                    }
                });
        } else {
            for (r, out) in board.chunks_exact_mut(stride).enumerate() {
                row(r, out);
            }
        }
        std::mem::swap(&mut self.cur, &mut self.next);
    }
}

impl Life for Dense {
    fn side(&self) -> u64 {
        self.tam
    }

    fn advance(&mut self, generations: u64) {
        match self.pool.take() {
            None => (0..generations).for_each(|_| self.step(false)),
            Some(pool) => {
                // One `install` for all the generations rather than one
                // each: the caller's thread becomes a pool thread, and the
                // bands of the next generation find the other threads still
                // spinning instead of waking them through a condition
                // variable every few microseconds.
                pool.install(|| (0..generations).for_each(|_| self.step(true)));
                self.pool = Some(pool);
            }
        }
    }

    fn live_cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for (r, row) in self
            .cur
            .chunks_exact(self.stride)
            .skip(1)
            .take(self.rows)
            .enumerate()
        {
            for (k, &word) in row[1..=self.words].iter().enumerate() {
                let mut w = word;
                while w != 0 {
                    let j = w.trailing_zeros() as u64;
                    out.push((r as u64, 64 * k as u64 + j));
                    w &= w - 1;
                }
            }
        }
        out
    }
}

/// One row of the next generation. `rows` is the padded rows above, at and
/// below it (`3 · stride` words); `out` is the padded output row (`stride`
/// words), whose padding words are left alone.
fn step_row(rows: &[u64], out: &mut [u64], last_mask: u64) {
    let stride = out.len();
    let n = stride - 2;
    let (above, rest) = rows.split_at(stride);
    let (mid, below) = rest.split_at(stride);
    let below = &below[..stride];
    let out = &mut out[1..=n];
    // For each row, three slices of the same length `n`: the word before,
    // the word itself, the word after. Equal lengths let the compiler drop
    // the bounds checks and vectorize the loop.
    let (a0, a1, a2) = (&above[..n], &above[1..=n], &above[2..]);
    let (m0, m1, m2) = (&mid[..n], &mid[1..=n], &mid[2..]);
    let (b0, b1, b2) = (&below[..n], &below[1..=n], &below[2..]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = rule(
            [a0[i], a1[i], a2[i]],
            [m0[i], m1[i], m2[i]],
            [b0[i], b1[i], b2[i]],
        );
    }
    if let Some(last) = out.last_mut() {
        *last &= last_mask;
    }
}

/// The next state of the 64 cells of a word, from three consecutive words
/// (`[previous, this, next]`) of the row above, its own row and the row
/// below.
///
/// Neighbours are counted bit-sliced: a count is held as bit planes, a word
/// per binary digit, and added with full adders (`sum = a ^ b ^ c`,
/// `carry = majority(a, b, c)`), 64 cells at once.
///
/// 1. Horizontal neighbours: cell `64k + j`'s left neighbour is bit `j - 1`,
///    brought to bit `j` by `x << 1`; for bit 0 it is bit 63 of the previous
///    word, `prev >> 63`. The right neighbour likewise: `(x >> 1) |
///    (next << 63)`.
/// 2. Above: left + centre + right = `sa + 2·ca` (a full adder); below:
///    `sb + 2·cb`; own row, left + right only: `sm + 2·cm` (a half adder).
/// 3. The ones: `sa + sb + sm = ones + 2·c1` (a full adder). So the count is
///    `ones + 2·(ca + cb + cm + c1)`.
/// 4. `ca + cb + cm = p + 2·q` (a full adder), so the twos count is
///    `p + c1 + 2·q`. It is exactly one iff `q = 0` and `p ^ c1 = 1` (when
///    `p = c1 = 1` the xor is 0: two, not one).
/// 5. A cell lives iff the count is 3, or 2 and it is alive. Both need
///    exactly one two (a count of 2 or 3 has twos = 1; any other twos gives
///    0–1 or ≥ 4). With one two the count is `2 + ones`, so: alive next iff
///    `twos == 1 && (ones == 1 || alive)`.
#[inline(always)]
fn rule(above: [u64; 3], own: [u64; 3], below: [u64; 3]) -> u64 {
    let left = |w: [u64; 3]| (w[1] << 1) | (w[0] >> 63);
    let right = |w: [u64; 3]| (w[1] >> 1) | (w[2] << 63);
    let (sa, ca) = full_add(left(above), above[1], right(above));
    let (sb, cb) = full_add(left(below), below[1], right(below));
    let (l, r) = (left(own), right(own));
    let (sm, cm) = (l ^ r, l & r);
    let (ones, c1) = full_add(sa, sb, sm);
    let (p, q) = full_add(ca, cb, cm);
    let exactly_one_two = (p ^ c1) & !q;
    exactly_one_two & (ones | own[1])
}

/// `a + b + c` as `(sum bit, carry bit)`, per bit.
#[inline(always)]
fn full_add(a: u64, b: u64, c: u64) -> (u64, u64) {
    let ab = a ^ b;
    (ab ^ c, (a & b) | (ab & c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 3×3 neighbourhood, at every bit position that matters: bit 0
    /// (left neighbour from the previous word), bit 63 (right neighbour from
    /// the next word) and a middle bit.
    #[test]
    fn rule_matches_the_count_rule_on_every_neighbourhood() {
        for bits in 0u32..512 {
            let cell = |r: u32, c: u32| (bits >> (3 * r + c)) & 1 == 1;
            let neighbours = (0..3)
                .flat_map(|r| (0..3).map(move |c| (r, c)))
                .filter(|&(r, c)| (r, c) != (1, 1) && cell(r, c))
                .count();
            let alive = cell(1, 1);
            let expected = neighbours == 3 || (alive && neighbours == 2);
            for j in [0u32, 17, 63] {
                // Column `c` of the neighbourhood is board column 64 + j + c - 1,
                // in words 0..3.
                let row = |r: u32| {
                    let mut w = [0u64; 3];
                    for c in 0..3 {
                        if cell(r, c) {
                            let col = 64 + j + c - 1;
                            w[(col / 64) as usize] |= 1 << (col % 64);
                        }
                    }
                    w
                };
                // Other bits of the result are other cells: look at bit j.
                let next = rule(row(0), row(1), row(2)) >> j & 1;
                assert_eq!(
                    next,
                    u64::from(expected),
                    "neighbourhood {bits:09b} at bit {j}"
                );
            }
        }
    }

    #[test]
    fn bytes_for_is_what_new_allocates() {
        for tam in [1u64, 8, 63, 64, 65, 1024, 1030] {
            let d = Dense::new(tam, &[], 1);
            let bytes = (d.cur.capacity() + d.next.capacity()) * 8;
            assert_eq!(bytes as u64, Dense::bytes_for(tam), "tam {tam}");
        }
    }
}
