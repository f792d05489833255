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

// A formula's next-token logits: out = sum_k c_k * rows[k], over n_out entries. Row k covers the
// first sizes[k] entries (a smaller vocabulary adds nothing beyond them); zero weights are skipped.
void weighted_sum(const std::vector<const float *> & rows, const std::vector<int> & sizes,
                  const std::vector<float> & coefficients, int n_out, float * out);

}  // namespace drift
