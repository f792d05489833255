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

void fuse_logits(const float * h_llm, int n_llm,
                 const float * h_base, const std::vector<const float *> & h_attr,
                 const std::vector<float> & weights, float beta, int n_slm,
                 float * out) {
    const int n = std::min(n_llm, n_slm);
    std::copy(h_llm, h_llm + n_llm, out);
    // One pass per attribute keeps each inner loop a plain, vectorizable axpy.
    float base_scale = 0.0f;
    for (size_t a = 0; a < h_attr.size(); ++a) {
        const float scale = weights[a] / beta;
        const float * h = h_attr[a];
        for (int i = 0; i < n; ++i) {
            out[i] += scale * h[i];
        }
        base_scale += scale;
    }
    if (base_scale != 0.0f) {
        for (int i = 0; i < n; ++i) {
            out[i] -= base_scale * h_base[i];
        }
    }
}

}  // namespace drift
