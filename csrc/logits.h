// Arithmetic on full-vocabulary logit rows, kept native so that no row crosses into Python.
#pragma once

#include <vector>

namespace drift {

// log(sum(exp(row))), computed stably.
double log_sum_exp(const float * row, int n);

// log softmax(row)[token]
double log_prob(const float * row, int n, int token);

// Entropy in bits of softmax(row).
double entropy_bits(const float * row, int n);

// Drift decoding, paper eq. 9: out = h_llm + sum_i (p_i / beta) * (h_i - h_base).
// The attribute rows cover the first n_slm entries; LLM tokens beyond them get no shift.
void fuse_logits(const float * h_llm, int n_llm,
                 const float * h_base, const std::vector<const float *> & h_attr,
                 const std::vector<float> & weights, float beta, int n_slm,
                 float * out);

}  // namespace drift
