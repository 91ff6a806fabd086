//! The sparse engine: cost follows the live pattern, not the board's area,
//! and a small pattern that repeats itself shifted is moved forward whole
//! periods at once while it stays clear of the border.
//!
//! # Design
//!
//! - `tiles`: the live cells as 64×64 bit tiles keyed by tile coordinates;
//!   a generation computes only the live tiles and the neighbours their edge
//!   cells touch, 64 cells per word operation. Cells outside the board are
//!   never stored, so they are dead and never born.
//! - `period`: while the population is at most 1024 cells, every
//!   generation's pattern is recorded up to translation (normalised to its
//!   bounding box) for the last 64 generations. When generation `t`'s pattern is
//!   generation `t-p`'s shifted by `d`, whole periods are skipped: `k·p`
//!   generations, every cell moved by `k·d`. The benchmark's glider
//!   (period 4, `d = (1, 1)`) thus crosses a board of any side in 12
//!   simulated generations: a handful to be found, then one jump to near
//!   the far corner, then the last ones cell by cell, border rules
//!   included. Larger patterns, and patterns that never repeat as a whole
//!   (a glider leaving a still life behind), are simulated generation by
//!   generation, at a cost that follows their tiles.
//!
//! # Why skipping is exact
//!
//! Write `B(s)` for the board at generation `s`, `F` for one generation on
//! the infinite plane and `T_d` for translation by `d`. Call a pattern
//! *clear* when no live cell lies in row or column `0` or `tam-1`.
//!
//! 1. If `X` is clear, the board's next generation is `F(X)`: cells inside
//!    see the same neighbours (outside cells are dead in both); a cell
//!    outside has neighbours inside the board only in an edge row or
//!    column, all dead, so the plane gives it no birth either.
//! 2. `F` commutes with `T_d`. So if `B(t) = T_d B(t-p)` and the board
//!    followed the plane over `t-p .. t` (phases `t-p .. t-1` clear, by 1),
//!    then the plane's sequence from `B(t-p)` satisfies
//!    `S(t-p+i+m·p) = T_{m·d} B(t-p+i)` for all `m ≥ 0`, `0 ≤ i < p`.
//! 3. By induction on `s`, `B(s) = S(s)` for `t ≤ s ≤ t+k·p` as long as
//!    every `S(s)` with `s < t+k·p` is clear (1 again). Those are the phases
//!    `t-p .. t-1` shifted by `m·d`, `1 ≤ m ≤ k`. Clearness of a shifted
//!    box is a set of linear inequalities in `m` that hold at `m = 0`, so
//!    they hold for every `m ≤ k` once they hold at `m = k`: checking the
//!    largest shift suffices. Then `B(t+k·p) = T_{k·d} B(t)`, and it lies on
//!    the board (a step from a clear pattern stays within one cell of it).
//! 4. If `d = 0` no plane is needed: `B(t) = B(t-p)` and the board's own
//!    generation is a function, so `B(t+k·p) = B(t)` for every `k`, even
//!    against the border (a block in a corner).
//!
//! After a jump the history restarts; the remaining generations are
//! simulated one by one (and jumped again if a period shows up with room).

mod period;
mod tiles;

use crate::{Cell, Life};
use period::{History, Phase};
use tiles::Tiles;

/// A sparse board: live cells in bit tiles, plus the recent history of a
/// small pattern to skip its periods.
#[derive(Debug, Clone)]
pub struct Sparse {
    tam: u64,
    tiles: Tiles,
    history: History,
    generation: u64,
    computed: u64,
}

impl Sparse {
    /// A board of side `tam` with `cells` alive (duplicates allowed).
    ///
    /// # Panics
    ///
    /// If a cell lies outside the board.
    pub fn new(tam: u64, cells: &[Cell]) -> Sparse {
        let mut board = Sparse {
            tam,
            tiles: Tiles::from_cells(tam, cells),
            history: History::default(),
            generation: 0,
            computed: 0,
        };
        board.record();
        board
    }

    /// Generations advanced since [`Sparse::new`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Generations computed one by one since [`Sparse::new`]; the others
    /// were skipped as whole periods (or as nothing staying nothing).
    pub fn computed(&self) -> u64 {
        self.computed
    }

    /// Live cells.
    pub fn population(&self) -> u64 {
        self.tiles.population()
    }

    /// Records the current generation's phase, or forgets the history when
    /// the pattern is too large to track (the recorded phases must be those
    /// of consecutive generations).
    fn record(&mut self) {
        if self.tiles.is_empty() || self.tiles.population() > period::MAX_POPULATION {
            self.history.clear();
        } else {
            self.history.push(Phase::of(&self.tiles.cells()));
        }
    }

    /// Jumps forward if the pattern is periodic with room to move; returns
    /// the generations jumped (0 if none).
    fn try_skip(&mut self, left: u64) -> u64 {
        let Some(skip) = self.history.find_skip(self.tam, left) else {
            return 0;
        };
        let cells = self
            .history
            .current()
            .and_then(|phase| phase.cells_shifted(skip.shift))
            .expect("a skip keeps the pattern on the board");
        self.tiles = Tiles::from_cells(self.tam, &cells);
        self.history.clear();
        self.record();
        skip.generations
    }
}

impl Life for Sparse {
    fn side(&self) -> u64 {
        self.tam
    }

    fn advance(&mut self, generations: u64) {
        let mut left = generations;
        while left > 0 {
            if self.tiles.is_empty() {
                // Nothing is ever born from nothing.
                self.generation = self.generation.saturating_add(left);
                return;
            }
            let jumped = self.try_skip(left);
            if jumped > 0 {
                self.generation = self.generation.saturating_add(jumped);
                left -= jumped;
                continue;
            }
            self.tiles.step();
            self.generation = self.generation.saturating_add(1);
            self.computed += 1;
            left -= 1;
            self.record();
        }
    }

    fn live_cells(&self) -> Vec<Cell> {
        self.tiles.cells()
    }
}
