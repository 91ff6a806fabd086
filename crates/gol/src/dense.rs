//! The dense engine: every cell of every generation, 64 cells per word.
//!
//! Layout. A board of side `tam` is `tam` rows of `words = ⌈tam/64⌉` words;
//! bit `j` of word `k` is column `64k + j`. Each row is stored between a zero
//! word on the left and one on the right, and the rows between a zero row
//! above and one below, so a row is `stride = words + 2` words and a board
//! `(tam + 2) · stride` words. The padding is the dead border: it lets the
//! inner loops read the neighbours of the first and last words without a
//! branch. Columns `tam..64·words` of the last word are padding too.
//!
//! Stepping. Two boards, `cur` and `next`, swapped after every generation;
//! `next` is computed from `cur` read-only, with word-wide logic. A cell's
//! count is taken over its whole 3×3 block, itself included, as the sum of
//! three horizontal 3-cell sums, one per row (`horizontal`); each row's
//! horizontal sums are computed once per generation and serve the three
//! output rows that read them (`rule`, where the counting is derived).
//!
//! The rows are cut into bands, one per thread, and a band into chunks of
//! a few hundred words (`CHUNK_WORDS`). One loop per chunk (`chunk_step`)
//! computes, for each word, the sums of the row below into a [`Sums`]
//! buffer, and the word of `next` from them and from the sums of the row
//! above and its own row, stored by the same loop one and two rows earlier
//! (or carried over from the previous chunk). The loop runs over a chunk's
//! words as one flat slice, padding words included, rather than row by
//! row: a board of side 1024 has rows of only 16 words, and per-row work
//! (bounds checks, loop set-up) would cost as much as the logic. What lands
//! in the padding words of `next` is garbage (a left padding word can pick
//! up the first column as a neighbour), and so is what lands in columns
//! `≥ tam`: both are cleared right after, still inside the chunk. With more
//! than one thread the bands are computed in parallel on a rayon pool built
//! once in [`Dense::new`]; one `install` covers a whole [`Life::advance`]
//! call.
//!
//! Invariants: between generations the padding words of both boards are
//! zero, and so are the bits of columns `≥ tam`; [`Dense::bytes_for`] is
//! exactly what [`Dense::new`] allocates for the boards. The [`Sums`]
//! buffers, one per band, are allocated once in [`Dense::new`] and reused
//! every generation: `2 · (chunk_rows + 2) · stride` words per band, about
//! `2 · CHUNK_WORDS`, or six rows on boards too wide for two rows a chunk.

use std::cell::Cell as Shared;

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
    /// Rows per band.
    band_rows: usize,
    /// Rows per chunk of a band.
    chunk_rows: usize,
    /// One per band, reused by every generation.
    sums: Vec<Sums>,
}

/// Board words per chunk (rounded down to whole rows, at least one). Small
/// enough that a band's [`Sums`] stay in the L1 cache from chunk to chunk
/// (about 9 KiB), large enough that moving two rows of sums to the front
/// for each chunk costs little. Measured at side 1024 and 2048: 256 to 1024
/// words are as fast, within noise; 2048 is slightly slower.
const CHUNK_WORDS: usize = 512;

/// Words left unused after each plane of a [`Sums`], a cache line: the
/// buffers of two bands, allocated one after the other, never share a line
/// that both threads write.
const GAP: usize = 8;

/// The horizontal sums (`horizontal`) of a chunk's rows and the rows above
/// and below it, `(chunk_rows + 2) · stride` words per plane (and `GAP`):
/// `ones` is the low binary digit of every cell's sum, `twos` the high one.
/// Word `w` is the sum for word `w` of the chunk's padded rows.
#[derive(Debug)]
struct Sums {
    ones: Vec<u64>,
    twos: Vec<u64>,
}

impl Sums {
    fn new(words: usize) -> Sums {
        Sums {
            ones: vec![0u64; words + GAP],
            twos: vec![0u64; words + GAP],
        }
    }
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
        let band_rows = rows.div_ceil(threads).max(1);
        let chunk_rows = (CHUNK_WORDS / stride).clamp(1, band_rows);
        let sums = (0..rows.div_ceil(band_rows))
            .map(|_| Sums::new((chunk_rows + 2) * stride))
            .collect();
        Dense {
            tam,
            rows,
            words,
            stride,
            last_mask,
            cur,
            next: vec![0u64; len],
            band_rows,
            chunk_rows,
            sums,
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

    /// One generation: `next` from `cur`, then swap. `parallel`: the bands
    /// on the current rayon pool, else one after the other.
    fn step(&mut self, parallel: bool) {
        let band_rows = self.band_rows;
        let band = Band {
            stride: self.stride,
            chunk_rows: self.chunk_rows,
            last_mask: self.last_mask,
        };
        let cur = &self.cur[..];
        // Board rows only: the padding rows of `next` stay zero.
        let board = &mut self.next[band.stride..(self.rows + 1) * band.stride];
        // Band `b`'s output rows start at board row `b · band_rows`, and
        // read the padded rows from that one (the row above) on.
        let step_band = |(b, (out, sums)): (usize, (&mut [u64], &mut Sums))| {
            let first = b * band_rows * band.stride;
            let rows = &cur[first..first + out.len() + 2 * band.stride];
            band.step(rows, out, sums);
        };
        if parallel {
            board
                .par_chunks_mut(band_rows * band.stride)
                .zip(self.sums.par_iter_mut())
                .enumerate()
                .for_each(step_band);
        } else {
            board
                .chunks_mut(band_rows * band.stride)
                .zip(self.sums.iter_mut())
                .enumerate()
                .for_each(step_band);
        }
        std::mem::swap(&mut self.cur, &mut self.next);
    }
}

impl Life for Dense {
    /// The threads that step the board (fewer than asked when the board
    /// has fewer rows).
    fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(1, rayon::ThreadPool::current_num_threads)
    }

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

/// What stepping a band needs to know of the board.
#[derive(Clone, Copy, Debug)]
struct Band {
    stride: usize,
    chunk_rows: usize,
    last_mask: u64,
}

impl Band {
    /// A band of rows of the next generation. `rows` is the padded rows
    /// from the one above the band to the one below it (`(len + 2) ·
    /// stride` words); `out` is the band's `len` padded output rows.
    fn step(self, rows: &[u64], out: &mut [u64], sums: &mut Sums) {
        let stride = self.stride;
        let chunk = self.chunk_rows * stride;
        for (c, out) in out.chunks_mut(chunk).enumerate() {
            let n = out.len();
            // The chunk's rows and the rows above and below it.
            let rows = &rows[c * chunk..c * chunk + n + 2 * stride];
            // The sums of the rows above and at the chunk's first row. In
            // every chunk but the first they are the previous (whole)
            // chunk's last two rows of sums, moved to the front rather than
            // computed again. Word 0 is padding, and so is every word whose
            // sum is never computed (see `chunk_step`).
            if c == 0 {
                let (ones, twos) = (&mut sums.ones[1..2 * stride], &mut sums.twos[1..2 * stride]);
                horizontal_slice(rows, ones, twos);
            } else {
                sums.ones.copy_within(chunk..chunk + 2 * stride, 0);
                sums.twos.copy_within(chunk..chunk + 2 * stride, 0);
            }
            let ones = Shared::from_mut(&mut sums.ones[..n + 2 * stride]);
            let twos = Shared::from_mut(&mut sums.twos[..n + 2 * stride]);
            let sums = [ones.as_slice_of_cells(), twos.as_slice_of_cells()];
            chunk_step(rows, sums, stride, out);
            // Padding words and columns `≥ tam` back to dead.
            for row in out.chunks_exact_mut(stride) {
                if let [left, .., last, right] = row {
                    *left = 0;
                    *last &= self.last_mask;
                    *right = 0;
                }
            }
        }
    }
}

/// The horizontal sums of words `1..=n` of `rows` (`n + 2` words) into
/// `ones` and `twos` (`n` words each).
fn horizontal_slice(rows: &[u64], ones: &mut [u64], twos: &mut [u64]) {
    let n = ones.len();
    // Equal lengths `n` everywhere let the compiler drop the bounds checks
    // and vectorize the loop.
    let (r0, r1, r2) = (&rows[..n], &rows[1..=n], &rows[2..n + 2]);
    let twos = &mut twos[..n];
    for (i, o) in ones.iter_mut().enumerate() {
        (*o, twos[i]) = horizontal([r0[i], r1[i], r2[i]]);
    }
}

/// A chunk's words of `next` (`out`, `n` words), one loop over them: for
/// word `w` it computes the sum of word `w + 2·stride` of `rows` (the row
/// below), stores it at `w + 2·stride` of `sums` (`ones`, `twos`, both `n +
/// 2·stride` words, starting with the row above the chunk), and applies
/// `rule` to it and the sums at `w` (the row above) and `w + stride` (its
/// own row), stored by this loop two and one rows earlier, or before it.
///
/// One plane is read and written in the same loop at different offsets,
/// which `&` and `&mut` slices cannot say: hence the `Cell` views. A store
/// lands two rows, at least six words, after the loads that precede it,
/// and the compiler still vectorizes the loop (behind a run-time check of
/// that distance). Against a loop for the sums and then one for `rule`,
/// this saves reloading the row below's sums and a loop's overhead: 6–10%
/// more cell updates per second at side 1024 and 2048.
///
/// The last word of `out`, padding, is left alone: its row below has no
/// next word in `rows`. So the last word of `sums` is never computed; what
/// sits there only reaches padding words of `next`.
fn chunk_step(rows: &[u64], [ones, twos]: [&[Shared<u64>]; 2], stride: usize, out: &mut [u64]) {
    let m = out.len() - 1;
    let out = &mut out[..m];
    // Equal lengths `m` everywhere let the compiler drop the bounds checks.
    let alive = &rows[stride..][..m];
    let below = 2 * stride;
    let (r0, r1, r2) = (
        &rows[below - 1..][..m],
        &rows[below..][..m],
        &rows[below + 1..][..m],
    );
    let (ones_a, ones_m, ones_b) = (&ones[..m], &ones[stride..][..m], &ones[below..][..m]);
    let (twos_a, twos_m, twos_b) = (&twos[..m], &twos[stride..][..m], &twos[below..][..m]);
    for (i, o) in out.iter_mut().enumerate() {
        let sum_b = horizontal([r0[i], r1[i], r2[i]]);
        ones_b[i].set(sum_b.0);
        twos_b[i].set(sum_b.1);
        let sum_a = (ones_a[i].get(), twos_a[i].get());
        let sum_m = (ones_m[i].get(), twos_m[i].get());
        *o = rule(sum_a, sum_m, sum_b, alive[i]);
    }
}

/// Each cell's left, own and right cells summed, for the 64 cells of a word,
/// from three consecutive words of a row (`[previous, this, next]`).
///
/// Counts are bit-sliced: held as bit planes, a word per binary digit, and
/// added with full adders (`sum = a ^ b ^ c`, `carry = majority(a, b, c)`),
/// 64 cells at once. Cell `64k + j`'s left neighbour is bit `j - 1`, brought
/// to bit `j` by `x << 1`; for bit 0 it is bit 63 of the previous word,
/// `prev >> 63`. The right neighbour likewise: `(x >> 1) | (next << 63)`.
/// One full adder gives the sum, 0 to 3, as `(ones, twos)` planes.
#[inline(always)]
fn horizontal(w: [u64; 3]) -> (u64, u64) {
    let left = (w[1] << 1) | (w[0] >> 63);
    let right = (w[1] >> 1) | (w[2] << 63);
    full_add(left, w[1], right)
}

/// The next state of the 64 cells of a word, from the horizontal sums
/// (`horizontal`, `(ones, twos)` planes) of the row above, its own row and
/// the row below, and its own cells (`alive`).
///
/// 1. The three sums count the whole 3×3 block, the cell included: `total =
///    a + m + b` with `a = a0 + 2·a1` and so on, 0 to 9. A cell lives next
///    iff `total == 3` (3 neighbours and dead: born; 2 and alive: stays), or
///    `total == 4` and it is alive (3 neighbours: stays; a dead cell with 4
///    neighbours is not born).
/// 2. The ones: `a0 + m0 + b0 = s + 2·c` (a full adder), so `total = s +
///    2·t` with `t = a1 + m1 + b1 + c`, 0 to 4.
/// 3. `a1 + m1 + b1 = p + 2·q` (a full adder), so `t = p + c + 2·q`.
/// 4. `total == 3` iff `s = 1` and `t = 1`; `total == 4` iff `s = 0` and
///    `t = 2`.
/// 5. With `x = p ^ c`: `t = 1` iff `x = 1` (`p + c = 1`) and `q = 0`.
///    `t = 2` iff `x = 0` and `p ^ q = 1`: with `x = 0`, `p = c` and `t =
///    2·(p + q)`, which is 2 iff exactly one of `p`, `q` is set. So a cell
///    lives next iff `s = 1` and `x = 1` and `q = 0`, or `s = 0` and `x =
///    0` and `p ^ q = 1` and it is alive.
/// 6. Both cases need `x == s`, and the one with `alive` has `s = 0`: `(s |
///    alive) & !(x ^ s)`. What is left is `!q` when `s = 1` and `p ^ q`
///    when `s = 0`, that is `q ^ (s | p)`.
///
/// 17 operations a word, and 11 for each row's horizontal sums, computed
/// once for three output rows: against about 44 when each output row
/// summed its three rows' neighbours itself.
#[inline(always)]
fn rule(above: (u64, u64), own: (u64, u64), below: (u64, u64), alive: u64) -> u64 {
    let (s, c) = full_add(above.0, own.0, below.0);
    let (p, q) = full_add(above.1, own.1, below.1);
    let x = p ^ c;
    (s | alive) & !(x ^ s) & (q ^ (s | p))
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
                let h = |r: u32| horizontal(row(r));
                let next = rule(h(0), h(1), h(2), row(1)[1]) >> j & 1;
                assert_eq!(
                    next,
                    u64::from(expected),
                    "neighbourhood {bits:09b} at bit {j}"
                );
            }
        }
    }

    /// The horizontal sum of every 3-cell neighbourhood at bits 0, 17, 63.
    #[test]
    fn horizontal_counts_left_own_and_right() {
        for bits in 0u32..8 {
            for j in [0u32, 17, 63] {
                let mut w = [0u64; 3];
                for c in 0..3 {
                    if bits >> c & 1 == 1 {
                        let col = 64 + j + c - 1;
                        w[(col / 64) as usize] |= 1 << (col % 64);
                    }
                }
                let (ones, twos) = horizontal(w);
                let sum = (ones >> j & 1) + 2 * (twos >> j & 1);
                assert_eq!(sum, u64::from(bits.count_ones()), "{bits:03b} at bit {j}");
            }
        }
    }

    /// One generation of a plain board of `bool`s with a dead border.
    fn naive_step(tam: usize, cells: &[bool]) -> Vec<bool> {
        let at = |r: usize, c: usize| r < tam && c < tam && cells[r * tam + c];
        let mut next = vec![false; tam * tam];
        for r in 0..tam {
            for c in 0..tam {
                let neighbours = (0..3)
                    .flat_map(|dr| (0..3).map(move |dc| (dr, dc)))
                    .filter(|&(dr, dc)| (dr, dc) != (1, 1))
                    .filter(|&(dr, dc)| at((r + dr).wrapping_sub(1), (c + dc).wrapping_sub(1)))
                    .count();
                next[r * tam + c] = neighbours == 3 || (at(r, c) && neighbours == 2);
            }
        }
        next
    }

    /// Chunks of every size, the last one of a band short or whole, on one
    /// and several bands: the sums carried from chunk to chunk, the
    /// padding words cleared and the last word masked, generation by
    /// generation.
    #[test]
    fn every_chunk_size_matches_a_plain_board() {
        for tam in [5usize, 64, 70, 130] {
            // A fixed pseudo-random soup, about one cell in three alive.
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ tam as u64;
            let mut cells: Vec<bool> = (0..tam * tam)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    seed >> 62 == 0 || seed >> 62 == 3 && seed >> 40 & 1 == 0
                })
                .collect();
            let live: Vec<Cell> = (0..tam * tam)
                .filter(|&i| cells[i])
                .map(|i| ((i / tam) as u64, (i % tam) as u64))
                .collect();
            let mut boards: Vec<(usize, usize, Dense)> = Vec::new();
            for threads in [1, 3] {
                for chunk_rows in [1, 2, 3, 7, usize::MAX] {
                    let mut d = Dense::new(tam as u64, &live, threads);
                    if chunk_rows != usize::MAX {
                        d.chunk_rows = chunk_rows.min(d.band_rows);
                        let words = (d.chunk_rows + 2) * d.stride;
                        d.sums.iter_mut().for_each(|s| *s = Sums::new(words));
                    }
                    boards.push((threads, chunk_rows, d));
                }
            }
            for generation in 1..=12 {
                cells = naive_step(tam, &cells);
                let expected: Vec<Cell> = (0..tam * tam)
                    .filter(|&i| cells[i])
                    .map(|i| ((i / tam) as u64, (i % tam) as u64))
                    .collect();
                for (threads, chunk_rows, d) in &mut boards {
                    d.advance(1);
                    assert_eq!(
                        d.live_cells(),
                        expected,
                        "tam {tam}, {threads} threads, chunks of {chunk_rows} rows, \
                         generation {generation}"
                    );
                    let padding_is_dead = d.cur.chunks_exact(d.stride).all(|row| {
                        row[0] == 0 && row[d.stride - 1] == 0 && row[d.words] & !d.last_mask == 0
                    });
                    assert!(padding_is_dead, "tam {tam}, generation {generation}");
                }
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
