//! The plain byte-per-cell engine every engine is checked against: the
//! classic C program's loop, cell by cell, with a dead border.

use weir_gol::Cell;

/// A board of side `tam` with one byte per cell and a dead border row and
/// column on every side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    tam: usize,
    cells: Vec<u8>,
}

impl Reference {
    pub(crate) fn new(tam: u64, live: &[Cell]) -> Reference {
        let tam = tam as usize;
        let mut board = Reference {
            tam,
            cells: vec![0; (tam + 2) * (tam + 2)],
        };
        for &(r, c) in live {
            let i = board.at(r as usize + 1, c as usize + 1);
            board.cells[i] = 1;
        }
        board
    }

    fn at(&self, row: usize, col: usize) -> usize {
        row * (self.tam + 2) + col
    }

    pub(crate) fn step(&mut self) {
        let mut next = vec![0u8; self.cells.len()];
        for i in 1..=self.tam {
            for j in 1..=self.tam {
                let mut n = 0;
                for (di, dj) in [
                    (0, 0),
                    (0, 1),
                    (0, 2),
                    (1, 0),
                    (1, 2),
                    (2, 0),
                    (2, 1),
                    (2, 2),
                ] {
                    n += self.cells[self.at(i + di - 1, j + dj - 1)];
                }
                let alive = self.cells[self.at(i, j)] == 1;
                next[self.at(i, j)] = u8::from(n == 3 || (alive && n == 2));
            }
        }
        self.cells = next;
    }

    pub(crate) fn live_cells(&self) -> Vec<Cell> {
        let mut out = Vec::new();
        for i in 1..=self.tam {
            for j in 1..=self.tam {
                if self.cells[self.at(i, j)] == 1 {
                    out.push(((i - 1) as u64, (j - 1) as u64));
                }
            }
        }
        out
    }
}
