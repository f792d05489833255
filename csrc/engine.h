// Drift decoding (paper section 3.2, Algorithm 2) with the whole token loop in native code.
//
// The LLM context holds the conversation on one sequence. The sLM context holds one
// sequence, with its own KV cache, per system prompt: the base prompt first, then the
// m attribute prompts. Each step makes one llama_decode per model that advances every
// sequence by the sampled token; the logits are fused and sampled here.
//
// When the LLM is the sLM and its system prompt is the base prompt, h_LLM is h_base:
// the engine then has no LLM context at all (share_base).
#pragma once

#include "model.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct llama_sampler;

namespace drift {

struct SamplingParams {
    float temperature = 0.8f;  // 0: greedy
    int top_k = 0;             // 0: off
    float top_p = 0.9f;        // 1: off
    float min_p = 0.0f;        // 0: off
    uint32_t seed = 0;
    int max_tokens = 500;
    std::vector<std::string> stop;
    bool entropy_stats = false;
};

struct GenerationResult {
    std::string text;
    std::vector<llama_token> tokens;
    std::string finish_reason;  // "stop", "length" or "interrupted"
    double seconds = 0.0;
    double entropy_plain_bits = 0.0;  // mean over steps, when asked for
    double entropy_fused_bits = 0.0;
};

// Receives complete UTF-8 text only; returning false stops generation.
using PieceCallback = std::function<bool(const std::string & piece)>;

struct EngineParams {
    int n_ctx = 2048;  // KV cells per sequence
    int n_batch = 512;
    int n_threads = 0;
};

class Engine {
public:
    Engine(const Model & llm, const Model & slm, int n_attributes, bool share_base, const EngineParams & params);

    int n_attributes() const { return n_attributes_; }
    bool share_base() const { return share_base_; }

    // Brings every sequence's KV cache to the given tokens, evaluating only what
    // differs from what it already holds (always at least the last token, whose
    // logits start the next step). slm_prompts: base first, then each attribute;
    // empty when n_attributes is 0 and the base is not shared. Returns the number
    // of tokens evaluated.
    int64_t sync(const std::vector<llama_token> & llm_prompt, const std::vector<std::vector<llama_token>> & slm_prompts);

    GenerationResult generate(const std::vector<float> & weights, float beta, const SamplingParams & sampling,
                              const PieceCallback & on_piece);

    // Current next-token logits: sequence -1 is the LLM, 0 the base, i the i-th attribute.
    std::vector<float> logits(int sequence) const;
    std::vector<float> fused_logits(const std::vector<float> & weights, float beta) const;

    // The decode calls of n steps with no fusion or sampling: the lower bound of a step.
    void raw_steps(int n);

    // Bytes of KV cache holding the sequences' tokens now.
    size_t kv_bytes() const;

private:
    struct Sequences {
        llama_context * ctx = nullptr;
        std::vector<std::vector<llama_token>> history;  // tokens in each sequence's KV cache
        std::vector<std::vector<float>> logits;         // each sequence's last logits
    };

    int64_t sync_context(Sequences & seqs, const std::vector<std::vector<llama_token>> & prompts);
    void step(Sequences & seqs, llama_token token, bool keep_logits);
    void check_weights(const std::vector<float> & weights, float beta) const;
    void fuse(const std::vector<float> & weights, float beta, float * out) const;
    const std::vector<float> & llm_logits() const;
    bool full() const;

    const Model & llm_model_;
    const Model & slm_model_;
    int n_attributes_;
    bool share_base_;
    EngineParams params_;
    ContextPtr llm_ctx_;
    ContextPtr slm_ctx_;
    Sequences llm_seqs_;  // unused when share_base
    Sequences slm_seqs_;  // unused when there are no attributes and no shared base
    int n_ctx_seq_ = 0;
};

}  // namespace drift
