//! Live cells as 64×64 bit tiles, and one generation computed tile by tile.
//!
//! A tile is keyed by `(row / 64, col / 64)`; its word `i` holds the cells of
//! row `64·key.0 + i`, bit `j` being column `64·key.1 + j`. Only tiles with a
//! live cell are stored, sorted by key, so memory and work follow the live
//! pattern and not the board: a generation computes the live tiles and those
//! of their neighbours that a live cell touches (a dead tile can only see a
//! birth next to a live cell on its edge).
//!
//! Invariants: no stored tile is all dead; no bit lies outside the board
//! (rows and columns `>= tam`), and no tile lies outside it, so a cell
//! outside the board is dead forever and counts as dead for its neighbours
//! — the dead border.

use std::collections::BTreeMap;

use crate::Cell;

/// Cells per tile side.
const SIDE: u64 = 64;

/// `(row / 64, col / 64)`.
type Key = (u64, u64);

/// One word per row; bit `j` is column `j` of the tile.
type Rows = [u64; SIDE as usize];

const DEAD: Rows = [0; SIDE as usize];

/// The live cells of a board of side `tam`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Tiles {
    tam: u64,
    /// Sorted by key; no tile is all dead.
    tiles: Vec<(Key, Rows)>,
    population: u64,
}

impl Tiles {
    /// Panics if a cell lies outside the board.
    pub(super) fn from_cells(tam: u64, cells: &[Cell]) -> Tiles {
        let mut map: BTreeMap<Key, Rows> = BTreeMap::new();
        for &(r, c) in cells {
            assert!(
                r < tam && c < tam,
                "cell ({r}, {c}) lies outside a board of side {tam}"
            );
            let rows = map.entry((r / SIDE, c / SIDE)).or_insert(DEAD);
            rows[(r % SIDE) as usize] |= 1 << (c % SIDE);
        }
        let tiles: Vec<(Key, Rows)> = map.into_iter().collect();
        let population = tiles.iter().map(|(_, rows)| count(rows)).sum();
        Tiles {
            tam,
            tiles,
            population,
        }
    }

    pub(super) fn population(&self) -> u64 {
        self.population
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// The live cells, sorted by `(row, col)`.
    pub(super) fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::with_capacity(self.population as usize);
        for &((tr, tc), ref rows) in &self.tiles {
            for (i, &word) in rows.iter().enumerate() {
                let mut w = word;
                while w != 0 {
                    let j = u64::from(w.trailing_zeros());
                    out.push((tr * SIDE + i as u64, tc * SIDE + j));
                    w &= w - 1;
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Advances one generation.
    pub(super) fn step(&mut self) {
        let mut next = Vec::with_capacity(self.tiles.len() + 8);
        let mut population = 0;
        for key in self.candidates() {
            let rows = self.next_tile(key);
            let n = count(&rows);
            if n > 0 {
                population += n;
                next.push((key, rows));
            }
        }
        self.tiles = next;
        self.population = population;
    }

    /// The tiles that may hold a live cell next generation, sorted: every
    /// live tile, and each neighbour that a live cell on the shared edge or
    /// corner touches — if it lies inside the board.
    fn candidates(&self) -> Vec<Key> {
        let last = (self.tam - 1) / SIDE;
        let mut keys = Vec::with_capacity(self.tiles.len() * 3);
        for &((tr, tc), ref rows) in &self.tiles {
            let any = rows.iter().fold(0, |acc, w| acc | w);
            let (top, bottom) = (rows[0], rows[SIDE as usize - 1]);
            let west = |w: u64| w & 1 != 0;
            let east = |w: u64| w >> (SIDE - 1) != 0;
            let up = tr.checked_sub(1);
            let down = (tr < last).then_some(tr + 1);
            let left = tc.checked_sub(1);
            let right = (tc < last).then_some(tc + 1);
            let near = [
                (up, left, west(top)),
                (up, Some(tc), top != 0),
                (up, right, east(top)),
                (Some(tr), left, west(any)),
                (Some(tr), right, east(any)),
                (down, left, west(bottom)),
                (down, Some(tc), bottom != 0),
                (down, right, east(bottom)),
            ];
            keys.push((tr, tc));
            for (r, c, touched) in near {
                if let (Some(r), Some(c), true) = (r, c, touched) {
                    keys.push((r, c));
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn tile(&self, r: Option<u64>, c: Option<u64>) -> &Rows {
        let (Some(r), Some(c)) = (r, c) else {
            return &DEAD;
        };
        match self.tiles.binary_search_by_key(&(r, c), |&(k, _)| k) {
            Ok(i) => &self.tiles[i].1,
            Err(_) => &DEAD,
        }
    }

    /// Tile `key` next generation, from it and its eight neighbours, with
    /// word-wide logic: the eight neighbours of every cell of a row are
    /// eight shifted words, summed by bit-sliced adders.
    fn next_tile(&self, (tr, tc): Key) -> Rows {
        let up = tr.checked_sub(1);
        let left = tc.checked_sub(1);
        // Missing neighbours past the far edges are simply not stored.
        let (down, right) = (Some(tr + 1), Some(tc + 1));
        let centre = self.tile(Some(tr), Some(tc));
        let (n, s) = (self.tile(up, Some(tc)), self.tile(down, Some(tc)));
        let (w, e) = (self.tile(Some(tr), left), self.tile(Some(tr), right));
        let (nw, ne) = (self.tile(up, left), self.tile(up, right));
        let (sw, se) = (self.tile(down, left), self.tile(down, right));

        // Rows -1..=64 of the tile: the word itself and the cells just
        // west (column -1) and east (column 64) of it.
        const EXT: usize = SIDE as usize + 2;
        let last = SIDE as usize - 1;
        let mut mid = [0u64; EXT];
        let mut westof = [0u64; EXT];
        let mut eastof = [0u64; EXT];
        (mid[0], westof[0], eastof[0]) = (n[last], nw[last] >> last, ne[last] & 1);
        for i in 0..SIDE as usize {
            (mid[i + 1], westof[i + 1], eastof[i + 1]) = (centre[i], w[i] >> last, e[i] & 1);
        }
        (mid[EXT - 1], westof[EXT - 1], eastof[EXT - 1]) = (s[0], sw[0] >> last, se[0] & 1);
        // Bit j of `lft[x]` is the cell at column j-1, of `rgt[x]` at j+1.
        let mut lft = [0u64; EXT];
        let mut rgt = [0u64; EXT];
        for x in 0..EXT {
            lft[x] = (mid[x] << 1) | westof[x];
            rgt[x] = (mid[x] >> 1) | (eastof[x] << last);
        }

        let cols = self.tam - tc * SIDE;
        let col_mask = if cols >= SIDE { !0 } else { (1u64 << cols) - 1 };
        let rows_in_board = (self.tam - tr * SIDE).min(SIDE) as usize;
        let mut out = DEAD;
        for (i, word) in out.iter_mut().enumerate().take(rows_in_board) {
            // Rows i-1, i and i+1 of the tile.
            let (a, b, c) = (i, i + 1, i + 2);
            let (s0, s1, s2) = sum8([
                lft[a], mid[a], rgt[a], lft[b], rgt[b], lft[c], mid[c], rgt[c],
            ]);
            // Exactly 3 neighbours, or 2 and alive (8 ≡ 0 mod 8 is neither).
            *word = s1 & !s2 & (s0 | mid[b]) & col_mask;
        }
        out
    }
}

impl std::fmt::Debug for Tiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiles")
            .field("tam", &self.tam)
            .field("tiles", &self.tiles.len())
            .field("population", &self.population)
            .finish()
    }
}

fn count(rows: &Rows) -> u64 {
    rows.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// Bitwise sum of eight words, modulo 8: bit `j` of the result's words
/// `(s0, s1, s2)` are the binary digits of how many inputs have bit `j` set.
fn sum8(x: [u64; 8]) -> (u64, u64, u64) {
    fn full(a: u64, b: u64, c: u64) -> (u64, u64) {
        let t = a ^ b;
        (t ^ c, (a & b) | (t & c))
    }
    let (sa, ca) = full(x[0], x[1], x[2]);
    let (sb, cb) = full(x[3], x[4], x[5]);
    let (sc, cc) = (x[6] ^ x[7], x[6] & x[7]);
    let (s0, cd) = full(sa, sb, sc);
    // Four carries of weight 2.
    let (t, ce) = full(ca, cb, cc);
    let (s1, cf) = (t ^ cd, t & cd);
    (s0, s1, ce ^ cf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum8_counts_every_combination() {
        for bits in 0u32..256 {
            let x: [u64; 8] = std::array::from_fn(|k| u64::from(bits >> k & 1));
            let (s0, s1, s2) = sum8(x);
            assert_eq!(s0 | s1 << 1 | s2 << 2, u64::from(bits.count_ones() % 8));
        }
    }

    #[test]
    fn cells_round_trip_across_tiles_and_edges() {
        let tam = 130;
        let cells = vec![(0, 0), (0, 63), (0, 64), (63, 129), (64, 0), (129, 129)];
        let tiles = Tiles::from_cells(tam, &cells);
        assert_eq!(tiles.cells(), cells);
        assert_eq!(tiles.population(), 6);
        assert_eq!(tiles.tiles.len(), 5);
    }

    #[test]
    fn a_blinker_on_a_tile_corner_oscillates() {
        // Horizontal through the corner of four tiles.
        let tam = 200;
        let mut tiles = Tiles::from_cells(tam, &[(63, 63), (63, 64), (63, 65)]);
        tiles.step();
        assert_eq!(tiles.cells(), vec![(62, 64), (63, 64), (64, 64)]);
        tiles.step();
        assert_eq!(tiles.cells(), vec![(63, 63), (63, 64), (63, 65)]);
    }

    #[test]
    fn nothing_is_born_past_the_far_edges() {
        // A vertical blinker on the last column of a board of side 70 (not a
        // multiple of 64): its horizontal phase would reach column 70.
        let mut tiles = Tiles::from_cells(70, &[(10, 69), (11, 69), (12, 69)]);
        tiles.step();
        assert_eq!(tiles.cells(), vec![(11, 68), (11, 69)]);
        tiles.step();
        assert!(tiles.is_empty());
    }
}
