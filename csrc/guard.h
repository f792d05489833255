// Keeping a steered answer close to the LLM's own: contrastive decoding's adaptive plausibility
// constraint (Li et al., 2023) and a per-step trust region on the steering.
#pragma once

#include "llama.h"

#include <vector>

namespace drift {

// The tokens the LLM itself finds plausible: p_llm(v) >= alpha * max p_llm, i.e.
// llm[v] >= max(llm) + log(alpha). alpha = 0 admits every token.
std::vector<llama_token> plausible_tokens(const float * llm, int n, float alpha);

// The largest s in [0, 1] with KL(softmax(llm + s d) || softmax(llm)) <= max_kl, where
// d = fused - llm is the steering; found by bisection (the KL grows with s) to within 1e-6.
float trust_scale(const float * llm, const float * fused, int n, float max_kl);

}  // namespace drift
