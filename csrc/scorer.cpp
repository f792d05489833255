#include "scorer.h"

#include "batch.h"
#include "logits.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace drift {

// Tokens of the prompt decoded together with the response, so that no decode is a single token.
static const size_t kPromptTail = 2;

Scorer::Scorer(const Model & model, const ContextParams & params) : model_(model), n_batch_(params.n_batch) {
    ctx_.reset(model_.new_context(params));
    n_ctx_ = (int) llama_n_ctx(ctx_.get());
}

void Scorer::decode(const std::vector<llama_token> & tokens, size_t from, size_t to, size_t first_output,
                    const std::function<void(size_t, const float *)> & on_row, const ScoreProgress & progress) {
    Batch batch(n_batch_);
    while (from < to) {
        // Never leave a single token for the next chunk.
        size_t end = std::min(to, from + n_batch_);
        if (to - end == 1) {
            end -= 1;
        }
        batch.clear();
        for (size_t pos = from; pos < end; ++pos) {
            batch.add(tokens[pos], (llama_pos) pos, 0, pos >= first_output);
        }
        batch.decode(ctx_.get());
        stats_.evaluated_tokens += end - from;
        stats_.decode_calls += 1;
        for (size_t pos = std::max(from, first_output); pos < end; ++pos) {
            on_row(pos, llama_get_logits_ith(ctx_.get(), (int32_t) (pos - from)));
        }
        if (progress) {
            progress(stats_.evaluated_tokens);
        }
        from = end;
    }
}

std::vector<ScoreResult> Scorer::score(const std::vector<ScoreItem> & items, bool per_token,
                                       const ScoreProgress & progress) {
    for (size_t i = 0; i < items.size(); ++i) {
        const auto & item = items[i];
        if (item.prompt.empty() || item.response.empty()) {
            throw std::invalid_argument("item " + std::to_string(i) + ": empty " +
                                        (item.prompt.empty() ? "prompt" : "response"));
        }
        const size_t needed = item.prompt.size() + item.response.size() - 1;
        if (needed > (size_t) n_ctx_) {
            throw std::invalid_argument("item " + std::to_string(i) + ": prompt and response need " +
                                        std::to_string(needed) + " tokens but the context holds " +
                                        std::to_string(n_ctx_));
        }
        stats_.naive_tokens += needed;
    }

    // Items with equal prompts side by side, and similar prompts close together.
    std::vector<size_t> order(items.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return items[a].prompt < items[b].prompt; });

    std::vector<ScoreResult> results(items.size());
    llama_memory_t mem = llama_get_memory(ctx_.get());
    const int n_vocab = model_.n_vocab();
    std::vector<llama_token> tokens;

    for (size_t i : order) {
        const auto & prompt = items[i].prompt;
        const auto & response = items[i].response;
        ScoreResult & result = results[i];
        if (per_token) {
            result.token_logprobs.resize(response.size());
        }

        // The prompt minus its tail, reusing what the cache holds already.
        const size_t head = prompt.size() > kPromptTail + 1 ? prompt.size() - kPromptTail : 0;
        size_t keep = std::mismatch(cached_.begin(), cached_.end(), prompt.begin(), prompt.begin() + head).first -
                      cached_.begin();
        keep = std::min(keep, head);
        if (head - keep == 1) {
            keep -= 1;
        }
        llama_memory_seq_rm(mem, 0, (llama_pos) keep, -1);
        cached_.resize(keep);
        decode(prompt, keep, head, head, nullptr, progress);
        cached_.assign(prompt.begin(), prompt.begin() + head);

        // The prompt tail and the response but its last token, with logits.
        tokens.assign(prompt.begin(), prompt.end());
        tokens.insert(tokens.end(), response.begin(), response.end() - 1);
        const size_t first_output = prompt.size() - 1;
        decode(tokens, head, tokens.size(), first_output,
               [&](size_t pos, const float * row) {
                   const size_t t = pos - first_output;
                   const float lp = (float) log_prob(row, n_vocab, response[t]);
                   result.logprob += lp;
                   if (per_token) {
                       result.token_logprobs[t] = lp;
                   }
               },
               progress);
        // Branch back to the shared head for the next item.
        llama_memory_seq_rm(mem, 0, (llama_pos) head, -1);
    }
    return results;
}

}  // namespace drift
