//! The dense engine against the byte-per-cell reference, generation by
//! generation, then the benchmark itself through `run_size`.
//!
//! Slow cases (the benchmark at pow 11 and 12, about 3·10¹⁰ cell updates)
//! run in release builds, or in debug builds when `WEIR_GOL_SLOW=1`.

use proptest::prelude::*;
use weir_gol::dense::Dense;
use weir_gol::{Cell, Engine, Life, RunConfig, expected_end, run_size};

use crate::patterns::{R_PENTOMINO, at, pulsar, slow};
use crate::reference::Reference;
use crate::soup::soup;

/// Steps `cells` on a board of side `tam` with the reference and with the
/// dense engine on each of `threads`, one generation at a time, and checks
/// every generation.
fn check(tam: u64, cells: &[Cell], generations: u64, threads: &[usize]) {
    let mut reference = Reference::new(tam, cells);
    let mut boards: Vec<Dense> = threads.iter().map(|&t| Dense::new(tam, cells, t)).collect();
    for board in &boards {
        assert_eq!(board.side(), tam);
        assert_eq!(
            board.live_cells(),
            reference.live_cells(),
            "tam {tam}, start"
        );
    }
    for generation in 1..=generations {
        reference.step();
        let expected = reference.live_cells();
        for (board, t) in boards.iter_mut().zip(threads) {
            board.advance(1);
            assert_eq!(
                board.live_cells(),
                expected,
                "tam {tam}, {t} threads, generation {generation}"
            );
        }
    }
}

fn sorted(mut cells: Vec<Cell>) -> Vec<Cell> {
    cells.sort_unstable();
    cells
}

#[test]
fn random_soups_match_the_reference() {
    // Powers of two as in the benchmark, widths inside one word, and widths
    // that end inside a word (63, 65, 70, 130: the last word is masked).
    for (i, tam) in [1u64, 2, 3, 8, 16, 63, 64, 65, 70, 128, 130]
        .into_iter()
        .enumerate()
    {
        for (j, density) in [0.2, 0.35, 0.5].into_iter().enumerate() {
            let cells = soup(tam, density, 1000 * i as u64 + j as u64);
            check(tam, &cells, 40, &[1, 3]);
        }
    }
}

#[test]
fn advance_many_at_once_equals_one_at_a_time() {
    let tam = 100;
    let cells = soup(tam, 0.3, 7);
    let mut reference = Reference::new(tam, &cells);
    for threads in [1, 2, 4] {
        let mut board = Dense::new(tam, &cells, threads);
        let mut at = Reference::new(tam, &cells);
        for jump in [0, 1, 5, 17] {
            board.advance(jump);
            (0..jump).for_each(|_| at.step());
            assert_eq!(board.live_cells(), at.live_cells(), "{threads} threads");
        }
    }
    (0..23).for_each(|_| reference.step());
    let mut board = Dense::new(tam, &cells, 2);
    board.advance(23);
    assert_eq!(board.live_cells(), reference.live_cells());
}

#[test]
fn more_threads_than_rows_and_zero_threads_work() {
    let cells = vec![(1, 0), (1, 1), (1, 2)];
    for threads in [0, 1, 3, 16] {
        let mut board = Dense::new(3, &cells, threads);
        assert!(board.threads() >= 1 && board.threads() <= 3);
        board.advance(1);
        assert_eq!(board.live_cells(), vec![(0, 1), (1, 1), (2, 1)]);
    }
}

#[test]
fn blinker_has_period_two() {
    // Inside a word, and across the boundary between words 0 and 1.
    for (tam, col) in [(16u64, 5u64), (128, 63), (128, 64)] {
        let horizontal = vec![(5, col - 1), (5, col), (5, col + 1)];
        let vertical = vec![(4, col), (5, col), (6, col)];
        let mut board = Dense::new(tam, &horizontal, 1);
        board.advance(1);
        assert_eq!(board.live_cells(), vertical, "tam {tam}, col {col}");
        board.advance(1);
        assert_eq!(board.live_cells(), horizontal, "tam {tam}, col {col}");
        board.advance(1001);
        assert_eq!(board.live_cells(), vertical, "tam {tam}, col {col}");
    }
}

#[test]
fn glider_moves_one_cell_diagonally_every_four_generations() {
    let glider = weir_gol::glider();
    for threads in [1, 2] {
        let mut board = Dense::new(200, &glider, threads);
        for k in 1..=40 {
            board.advance(4);
            // Crosses the word boundary at column 64.
            assert_eq!(board.live_cells(), at(&glider, (k, k)), "step {k}");
        }
    }
    // And against the reference all the way across a board that is not a
    // power of two, into its bottom-right corner.
    check(70, &glider, 300, &[1, 2]);
}

#[test]
fn pulsar_has_period_three() {
    let pulsar = at(&pulsar(), (2, 2));
    assert_eq!(pulsar.len(), 48);
    // Also straddling the word boundary at column 64.
    for (tam, dc) in [(17u64, 0u64), (128, 56)] {
        let start = at(&pulsar, (0, dc));
        let mut board = Dense::new(tam, &start, 1);
        board.advance(1);
        assert_ne!(board.live_cells(), start);
        board.advance(2);
        assert_eq!(board.live_cells(), start, "tam {tam}");
        board.advance(300);
        assert_eq!(board.live_cells(), start, "tam {tam}");
        check(tam, &start, 6, &[1, 2]);
    }
}

#[test]
fn r_pentomino_population_matches_the_reference() {
    let start = at(R_PENTOMINO, (127, 127));
    let mut reference = Reference::new(256, &start);
    (0..100).for_each(|_| reference.step());
    let expected = reference.live_cells();
    for threads in [1, 3] {
        let mut board = Dense::new(256, &start, threads);
        board.advance(100);
        let cells = board.live_cells();
        assert_eq!(cells.len(), expected.len());
        assert_eq!(cells, expected);
    }
}

#[test]
fn nothing_wraps_around_the_border() {
    // A vertical blinker on the left edge: the horizontal phase would need
    // column -1, which is dead, so two cells remain, then none. With
    // wrap-around it would keep blinking.
    let left = vec![(4, 0), (5, 0), (6, 0)];
    let mut board = Dense::new(64, &left, 1);
    board.advance(1);
    assert_eq!(board.live_cells(), vec![(5, 0), (5, 1)]);
    board.advance(1);
    assert_eq!(board.live_cells(), vec![]);

    // The same on the right edge, inside a masked last word (70 = 64 + 6)
    // and at the end of a full one.
    for tam in [8u64, 64, 70, 130] {
        let right = vec![(4, tam - 1), (5, tam - 1), (6, tam - 1)];
        let mut board = Dense::new(tam, &right, 2);
        board.advance(1);
        assert_eq!(
            board.live_cells(),
            vec![(5, tam - 2), (5, tam - 1)],
            "tam {tam}"
        );
    }

    // Horizontal blinkers on the top and bottom rows.
    for tam in [8u64, 70] {
        let top_bottom = vec![
            (0, 2),
            (0, 3),
            (0, 4),
            (tam - 1, 2),
            (tam - 1, 3),
            (tam - 1, 4),
        ];
        let mut board = Dense::new(tam, &top_bottom, 1);
        board.advance(1);
        assert_eq!(
            board.live_cells(),
            vec![(0, 3), (1, 3), (tam - 2, 3), (tam - 1, 3)]
        );
    }

    // Full rows and columns along every edge, and a full board.
    for tam in [8u64, 65, 70] {
        let mut edges = Vec::new();
        for i in 0..tam {
            edges.extend([(0, i), (tam - 1, i), (i, 0), (i, tam - 1)]);
        }
        check(tam, &sorted(edges), 20, &[1, 2]);
        let full: Vec<Cell> = (0..tam)
            .flat_map(|r| (0..tam).map(move |c| (r, c)))
            .collect();
        check(tam, &full, 20, &[1, 2]);
    }
}

#[test]
#[should_panic(expected = "outside a board")]
fn a_cell_outside_the_board_panics() {
    Dense::new(8, &[(0, 8)], 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_small_board_matches_the_reference(
        tam in 1u64..=140,
        seed in any::<u64>(),
        density in 0.05f64..0.6,
        threads in 1usize..=4,
        generations in 1u64..=12,
    ) {
        let cells = soup(tam, density, seed);
        check(tam, &cells, generations, &[threads]);
    }
}

#[test]
fn the_benchmark_is_correct_at_every_size() {
    let last_pow = if slow() { 12 } else { 10 };
    for pow in 3..=last_pow {
        for threads in [1, 2] {
            let config = RunConfig {
                engine: Engine::Dense,
                threads,
                ..RunConfig::default()
            };
            let result = run_size(pow, &config).expect("runs");
            assert!(result.correct, "pow {pow}, {threads} threads");
            assert_eq!(result.engine, Engine::Dense);
            assert_eq!(result.threads, threads);
            assert_eq!(result.generations, 4 * (result.tam - 3));
        }
    }
    // The check itself can fail: one generation short is not correct.
    let mut board = Dense::new(8, &weir_gol::glider(), 1);
    board.advance(19);
    assert_ne!(board.live_cells(), expected_end(8));
}
