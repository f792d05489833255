// Response scorer: the summed log-probability of each response given its prompt.
//
// Items are taken in prompt order. The KV cache keeps the longest common prefix of
// the previous prompt, so a prompt shared by many responses (or a shared head of
// the chat template) is evaluated once; after each response its cells are removed
// with llama_memory_seq_rm, which branches the prefix without copying it. Logits
// are requested only where a response token is predicted, and reduced to one
// log-probability natively.
//
// Every llama_decode carries at least two tokens of one sequence: llama.cpp's
// one-token path rounds differently from its batched path, and the scores must
// equal those of evaluating prompt + response in one go.
#pragma once

#include "model.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace drift {

struct ScoreItem {
    std::vector<llama_token> prompt;    // the rendered conversation up to the response
    std::vector<llama_token> response;  // the tokens scored
};

struct ScoreResult {
    double logprob = 0.0;
    std::vector<float> token_logprobs;  // filled on request
};

struct ScoreStats {
    int64_t evaluated_tokens = 0;  // tokens that went through llama_decode
    int64_t naive_tokens = 0;      // what evaluating each prompt + response alone would take
    int64_t decode_calls = 0;
};

// Called after each llama_decode with the tokens evaluated so far.
using ScoreProgress = std::function<void(int64_t tokens_evaluated)>;

class Scorer {
public:
    Scorer(const Model & model, const ContextParams & params);

    // Throws std::invalid_argument naming the item index for an empty prompt or
    // response, or an item longer than the context.
    std::vector<ScoreResult> score(const std::vector<ScoreItem> & items, bool per_token,
                                   const ScoreProgress & progress);

    const ScoreStats & stats() const { return stats_; }
    int n_ctx() const { return n_ctx_; }

private:
    // Decodes tokens[from, to) at their positions; outputs from `first_output` on.
    void decode(const std::vector<llama_token> & tokens, size_t from, size_t to, size_t first_output,
                const std::function<void(size_t pos, const float * row)> & on_row, const ScoreProgress & progress);

    const Model & model_;
    ContextPtr ctx_;
    int n_ctx_;
    int n_batch_;
    std::vector<llama_token> cached_;  // the tokens in the KV cache
    ScoreStats stats_;
};

}  // namespace drift
