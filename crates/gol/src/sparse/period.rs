//! Finding that a small pattern repeats itself, shifted, and how many whole
//! periods may be skipped without touching the dead border.
//!
//! [`History`] holds the last generations' patterns, each normalised to its
//! bounding box ([`Phase`]), for consecutive generations ending with the
//! current one. [`History::find_skip`] looks for the generation `t - p` whose
//! pattern equals the current one (`t`) shifted by `d`, and answers how many
//! generations may be jumped and by how much the pattern then moves. Why the
//! jump is exact is argued in the parent module's docs; the two rules are:
//!
//! - `d = 0`: the board itself repeats, so any number of whole periods may
//!   be skipped, border or not;
//! - `d ≠ 0`: phases `t-p .. t-1` must be clear of the edge (no live cell in
//!   row or column `0` or `tam-1`), and so must each of them shifted by
//!   `k·d`, the last shift `k` skipped.

use std::collections::VecDeque;

use crate::Cell;

/// The longest period looked for.
pub(super) const MAX_PERIOD: usize = 64;

/// Patterns above this population are not tracked (the history would cost
/// more than it can save); their history is dropped.
pub(super) const MAX_POPULATION: u64 = 1024;

/// One generation's pattern, up to translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Phase {
    /// The bounding box's top-left corner `(min row, min col)`.
    origin: Cell,
    /// The bounding box's bottom-right corner `(max row, max col)`.
    far: Cell,
    /// The live cells relative to `origin`, sorted.
    shape: Vec<Cell>,
    /// A hash of `shape`, to compare quickly.
    hash: u64,
}

impl Phase {
    /// The phase of `cells` (sorted, not empty).
    pub(super) fn of(cells: &[Cell]) -> Phase {
        let min_row = cells[0].0;
        let max_row = cells[cells.len() - 1].0;
        let min_col = cells.iter().map(|c| c.1).min().unwrap_or(0);
        let max_col = cells.iter().map(|c| c.1).max().unwrap_or(0);
        let shape: Vec<Cell> = cells
            .iter()
            .map(|&(r, c)| (r - min_row, c - min_col))
            .collect();
        let hash = shape.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &(r, c)| {
            let h = (h ^ r).wrapping_mul(0x0100_0000_01B3).rotate_left(29);
            (h ^ c).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        Phase {
            origin: (min_row, min_col),
            far: (max_row, max_col),
            shape,
            hash,
        }
    }

    /// Whether no live cell lies in an edge row or column of a board of side
    /// `tam`: then the next generation is the infinite plane's.
    fn clear(&self, tam: u64) -> bool {
        self.origin.0 >= 1
            && self.origin.1 >= 1
            && self.far.0.saturating_add(2) <= tam
            && self.far.1.saturating_add(2) <= tam
    }

    /// The live cells, shifted by `shift`; `None` if one would leave the
    /// first quadrant (the callers never shift that far).
    pub(super) fn cells_shifted(&self, shift: (i128, i128)) -> Option<Vec<Cell>> {
        let row = u64::try_from(i128::from(self.origin.0) + shift.0).ok()?;
        let col = u64::try_from(i128::from(self.origin.1) + shift.1).ok()?;
        self.shape
            .iter()
            .map(|&(r, c)| Some((row.checked_add(r)?, col.checked_add(c)?)))
            .collect()
    }
}

/// A jump forward: `generations` generations at once, moving every live cell
/// by `shift` (rows, columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Skip {
    pub(super) generations: u64,
    pub(super) shift: (i128, i128),
}

/// The phases of consecutive generations, oldest first, the last being the
/// current generation's.
#[derive(Clone, Default)]
pub(super) struct History {
    phases: VecDeque<Phase>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("phases", &self.phases.len())
            .finish()
    }
}

impl History {
    pub(super) fn clear(&mut self) {
        self.phases.clear();
    }

    /// Appends the phase of the generation after the last one recorded.
    pub(super) fn push(&mut self, phase: Phase) {
        if self.phases.len() > MAX_PERIOD {
            self.phases.pop_front();
        }
        self.phases.push_back(phase);
    }

    /// The current generation's phase, if recorded.
    pub(super) fn current(&self) -> Option<&Phase> {
        self.phases.back()
    }

    /// The longest exact jump of whole periods within `left` generations on
    /// a board of side `tam`, if the current pattern is periodic and a whole
    /// period fits.
    pub(super) fn find_skip(&self, tam: u64, left: u64) -> Option<Skip> {
        let now = self.phases.len().checked_sub(1)?;
        let current = &self.phases[now];
        // Whether phases t-p .. t-1 are all clear of the edge.
        let mut all_clear = true;
        for p in 1..=now {
            let before = &self.phases[now - p];
            all_clear &= before.clear(tam);
            if before.hash != current.hash || before.shape != current.shape {
                continue;
            }
            let period = p as u64;
            let d = (
                i128::from(current.origin.0) - i128::from(before.origin.0),
                i128::from(current.origin.1) - i128::from(before.origin.1),
            );
            let periods = if d == (0, 0) {
                left / period
            } else if all_clear {
                let phases = self.phases.range(now - p..now);
                left_periods_clear(phases, tam, d).min(left / period)
            } else {
                0
            };
            if periods > 0 {
                return Some(Skip {
                    generations: periods * period,
                    shift: (d.0 * i128::from(periods), d.1 * i128::from(periods)),
                });
            }
        }
        None
    }
}

/// The largest `k` such that every phase shifted by `k·d` is still clear of
/// the edge of a board of side `tam` (the phases are clear at `k = 0`).
/// Clearness is a box inequality, linear in `k`, so checking the union of
/// the bounding boxes at `k` covers every shift between.
fn left_periods_clear<'a>(
    phases: impl Iterator<Item = &'a Phase>,
    tam: u64,
    d: (i128, i128),
) -> u64 {
    let (mut lo, mut hi) = ((u64::MAX, u64::MAX), (0, 0));
    for phase in phases {
        lo = (lo.0.min(phase.origin.0), lo.1.min(phase.origin.1));
        hi = (hi.0.max(phase.far.0), hi.1.max(phase.far.1));
    }
    // Room along one axis: the box [lo, hi] moving by `step` per period
    // must stay within [1, tam - 2].
    let room = |lo: u64, hi: u64, step: i128| -> i128 {
        let (lo, hi, top) = (i128::from(lo), i128::from(hi), i128::from(tam) - 2);
        match step {
            0 => i128::MAX,
            s if s > 0 => (top - hi) / s,
            s => (lo - 1) / -s,
        }
    };
    let k = room(lo.0, hi.0, d.0).min(room(lo.1, hi.1, d.1));
    u64::try_from(k.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tam: u64, generations: &[&[Cell]], left: u64, expected: Option<Skip>) {
        let mut history = History::default();
        for cells in generations {
            history.push(Phase::of(cells));
        }
        assert_eq!(history.find_skip(tam, left), expected);
    }

    #[test]
    fn skips_whole_periods_only() {
        let block: &[Cell] = &[(5, 5), (5, 6), (6, 5), (6, 6)];
        let moved: &[Cell] = &[(6, 6), (6, 7), (7, 6), (7, 7)];
        let other: &[Cell] = &[(5, 5), (5, 6), (5, 7)];
        let skip = |generations, shift| Some(Skip { generations, shift });
        // A still life: all that is left, at once.
        check(20, &[block, block], 7, skip(7, (0, 0)));
        // Nothing recorded before: no period known.
        check(20, &[block], 7, None);
        // Period 2, moving (1, 1): the phases' boxes span rows 5..=6 and
        // columns 5..=7, which must stay within 1..=tam-2. On a board of
        // side 20, 5 generations leave room for 2 periods only.
        check(20, &[block, other, moved], 5, skip(4, (2, 2)));
        // Columns 5..=7 may move by 1 to 6..=8 on a board of side 10, by 2
        // on one of side 11; by none on one of side 9.
        check(10, &[block, other, moved], 100, skip(2, (1, 1)));
        check(11, &[block, other, moved], 100, skip(4, (2, 2)));
        check(9, &[block, other, moved], 100, None);
        check(20, &[block, other, moved], 1, None);
    }

    #[test]
    fn a_moving_pattern_on_the_edge_is_not_skipped() {
        // Row 0 is an edge row: births above it are suppressed, so the
        // plane's period does not hold.
        let at_edge: &[Cell] = &[(0, 5), (0, 6)];
        let moved: &[Cell] = &[(1, 6), (1, 7)];
        check(20, &[at_edge, moved], 10, None);
        // But a board that repeats exactly repeats, edge or not.
        check(
            20,
            &[at_edge, at_edge],
            10,
            Some(Skip {
                generations: 10,
                shift: (0, 0),
            }),
        );
    }
}
