//! Known patterns and helpers both engines' tests use.

use weir_gol::Cell;

/// Whether the slow cases run.
pub(crate) fn slow() -> bool {
    !cfg!(debug_assertions) || std::env::var_os("WEIR_GOL_SLOW").is_some_and(|v| v == "1")
}

/// `pattern` moved by `(dr, dc)`.
pub(crate) fn at(pattern: &[Cell], (dr, dc): Cell) -> Vec<Cell> {
    let mut cells: Vec<Cell> = pattern.iter().map(|&(r, c)| (r + dr, c + dc)).collect();
    cells.sort_unstable();
    cells
}

/// `pattern` mirrored within its `size`×`size` box: vertically, then
/// horizontally, as asked.
pub(crate) fn mirrored(pattern: &[Cell], size: u64, rows: bool, cols: bool) -> Vec<Cell> {
    pattern
        .iter()
        .map(|&(r, c)| {
            (
                if rows { size - 1 - r } else { r },
                if cols { size - 1 - c } else { c },
            )
        })
        .collect()
}

pub(crate) const BLINKER: &[Cell] = &[(0, 0), (0, 1), (0, 2)];
pub(crate) const BLOCK: &[Cell] = &[(0, 0), (0, 1), (1, 0), (1, 1)];
pub(crate) const BEEHIVE: &[Cell] = &[(0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (2, 2)];
pub(crate) const R_PENTOMINO: &[Cell] = &[(0, 1), (0, 2), (1, 0), (1, 1), (2, 1)];
/// Moving east (+columns), period 4, within a 4×5 box.
pub(crate) const LWSS: &[Cell] = &[
    (0, 1),
    (0, 4),
    (1, 0),
    (2, 0),
    (2, 4),
    (3, 0),
    (3, 1),
    (3, 2),
    (3, 3),
];

pub(crate) fn pulsar() -> Vec<Cell> {
    // One quadrant, mirrored into a 13×13 box.
    let quarter = [
        (0, 2),
        (0, 3),
        (0, 4),
        (2, 0),
        (3, 0),
        (4, 0),
        (2, 5),
        (3, 5),
        (4, 5),
        (5, 2),
        (5, 3),
        (5, 4),
    ];
    let mut cells = Vec::new();
    for rows in [false, true] {
        for cols in [false, true] {
            cells.extend(mirrored(&quarter, 13, rows, cols));
        }
    }
    cells.sort_unstable();
    cells.dedup();
    cells
}
