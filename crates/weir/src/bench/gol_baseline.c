/* The straightforward C + OpenMP Game of Life that `weir bench gol`
 * compares against: one int per cell, a dead border, the classic
 * benchmark's glider and generation count, the row loop split across
 * OpenMP threads. Prints the classic program's lines.
 * Build: cc -O2 -fopenmp gol_baseline.c -o gol_baseline */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#define ind2d(i, j) ((i) * (tam + 2) + (j))

static double wall_time(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return tv.tv_sec + tv.tv_usec / 1000000.0;
}

static void life(const int *in, int *out, int tam) {
#pragma omp parallel for
  for (int i = 1; i <= tam; i++) {
    for (int j = 1; j <= tam; j++) {
      int n = in[ind2d(i - 1, j - 1)] + in[ind2d(i - 1, j)] + in[ind2d(i - 1, j + 1)] +
              in[ind2d(i, j - 1)] + in[ind2d(i, j + 1)] +
              in[ind2d(i + 1, j - 1)] + in[ind2d(i + 1, j)] + in[ind2d(i + 1, j + 1)];
      int alive = in[ind2d(i, j)];
      out[ind2d(i, j)] = (n == 3 || (alive && n == 2)) ? 1 : 0;
    }
  }
}

static int correct(const int *b, int tam) {
  int cnt = 0;
  for (long ij = 0; ij < (long)(tam + 2) * (tam + 2); ij++) cnt += b[ij];
  return cnt == 5 && b[ind2d(tam - 2, tam - 1)] && b[ind2d(tam - 1, tam)] &&
         b[ind2d(tam, tam - 2)] && b[ind2d(tam, tam - 1)] && b[ind2d(tam, tam)];
}

int main(int argc, char **argv) {
  int powmin = argc > 1 ? atoi(argv[1]) : 3, powmax = argc > 2 ? atoi(argv[2]) : 10;
  for (int pow = powmin; pow <= powmax; pow++) {
    int tam = 1 << pow;
    double t0 = wall_time();
    int *in = calloc((size_t)(tam + 2) * (tam + 2), sizeof(int));
    int *out = calloc((size_t)(tam + 2) * (tam + 2), sizeof(int));
    if (!in || !out) return 1;
    in[ind2d(1, 2)] = in[ind2d(2, 3)] = in[ind2d(3, 1)] = in[ind2d(3, 2)] = in[ind2d(3, 3)] = 1;
    double t1 = wall_time();
    for (int i = 0; i < 2 * (tam - 3); i++) {
      life(in, out, tam);
      life(out, in, tam);
    }
    double t2 = wall_time();
    printf(correct(in, tam) ? "**RESULTADO CORRETO**\n" : "**RESULTADO ERRADO**\n");
    double t3 = wall_time();
    printf("tam=%d; tempos: init=%7.7f, comp=%7.7f, fim=%7.7f, tot=%7.7f\n", tam, t1 - t0,
           t2 - t1, t3 - t2, t3 - t0);
    free(in);
    free(out);
  }
  return 0;
}
