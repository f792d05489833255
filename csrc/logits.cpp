#include "logits.h"

#include <algorithm>
#include <cmath>

namespace drift {

double log_sum_exp(const float * row, int n) {
    const float max = *std::max_element(row, row + n);
    // Float exps in a simd loop (vectorized through libmvec): this runs once per scored
    // token over the whole vocabulary. Every term is <= 1, so float partial sums suffice.
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; ++i) {
        sum += std::exp(row[i] - max);
    }
    return max + std::log((double) sum);
}

double log_prob(const float * row, int n, int token) {
    return row[token] - log_sum_exp(row, n);
}

double entropy_bits(const float * row, int n) {
    const double lse = log_sum_exp(row, n);
    double h = 0.0;
    for (int i = 0; i < n; ++i) {
        const double logp = row[i] - lse;
        h -= std::exp(logp) * logp;
    }
    return h / std::log(2.0);
}

void weighted_sum(const std::vector<const float *> & rows, const std::vector<int> & sizes,
                  const std::vector<float> & coefficients, int n_out, float * out) {
    std::fill(out, out + n_out, 0.0f);
    // One pass per row keeps each inner loop a plain, vectorizable axpy.
    for (size_t k = 0; k < rows.size(); ++k) {
        const float c = coefficients[k];
        if (c == 0.0f) {
            continue;
        }
        const float * row = rows[k];
        const int n = std::min(n_out, sizes[k]);
        for (int i = 0; i < n; ++i) {
            out[i] += c * row[i];
        }
    }
}

}  // namespace drift
