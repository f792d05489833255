// Decoding by formula, with the whole token loop in native code.
//
// A slot generates one answer. Its next-token logits are a weighted sum of the logits of its
// sequences, h = sum_s c_s h_s, where each sequence is one (model, prompt) with its own KV cache.
// Drift (paper eq. 9) is the LLM under its system prompt with weight 1, the sLM under each
// attribute prompt with p_i / beta and under the base prompt with -sum_i p_i / beta; CFG, blends
// and plain decoding are other weights over other prompts.
//
// Slots run side by side: each step makes one llama_decode per model that advances every running
// sequence of every slot by its slot's sampled token (plain and personalized answers at once, or
// several users). The logits are fused and sampled here.
#pragma once

#include "model.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace drift {

// Plain values only: the defaults users see live in one place, Python's decoding.Sampling.
struct SamplingParams {
    float temperature = 0.0f;  // 0: greedy
    int top_k = 0;             // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    uint32_t seed = 0;
    int max_tokens = 0;
    std::vector<std::string> stop;
    // llama.cpp's repetition penalties and DRY, on the fused logits (1 / 0: off).
    float repeat_penalty = 1.0f;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
    int penalty_last_n = 64;
    float dry_multiplier = 0.0f;
    float dry_base = 1.75f;
    int dry_allowed_length = 2;
    int dry_penalty_last_n = -1;  // -1: the whole context
    bool entropy_stats = false;
    // OpenAI's logit_bias: added to the fused logits and to the guard's reference (the LLM's own), so
    // a -100 keeps a token out whether or not the LLM favours it. Never scaled by the trust region.
    std::vector<std::pair<llama_token, float>> logit_bias;
    // A GBNF grammar (start rule "root") the answer must follow; "": none. See Engine::generate.
    std::string grammar;
};

// A formula bound to a slot: how its next-token logits are made from its sequences' logits.
// Sequence 0 is the LLM under its own system prompt, the reference of the guard.
struct Steering {
    std::vector<float> coefficients;                        // one per sequence: h = sum_s c_s h_s
    std::vector<std::pair<llama_token, float>> token_bias;  // added after the sum: word preferences
    float eog_bias = 0.0f;      // on every end-of-generation token: the length preference (negative lengthens)
    float plausibility = 0.0f;  // alpha: only tokens with p_llm >= alpha * max p_llm are sampled; 0: off
    float max_kl = 0.0f;        // trust region: the steering is scaled so KL(fused || llm) <= max_kl nats; 0: off
    // Decoding toward the lengths a person chose (length.h): a target in words and the rate per e-fold
    // (> 0: a stop hazard past the target, < 0: end of generation pushed down before it); 0: off.
    float length_target = 0.0f;
    float length_rate = 0.0f;
};

struct GenerationResult {
    std::string text;
    std::vector<llama_token> tokens;
    std::string finish_reason;  // "stop", "length" or "interrupted"
    double seconds = 0.0;
    double entropy_plain_bits = 0.0;  // mean over steps of the slot's first sequence, when asked for
    double entropy_fused_bits = 0.0;
};

// Throws std::invalid_argument unless llama.cpp parses the grammar (GBNF with a "root" rule) for this
// model's vocabulary; llama.cpp prints its reason to stderr.
void check_grammar(const Model & model, const std::string & grammar);

// Called once per generated token of a slot with the text that token completed (complete UTF-8
// only, possibly empty). Returning false stops that slot before its next token is evaluated:
// this is how a closed stream or another thread cancels a generation within one token.
using PieceCallback = std::function<bool(int slot, const std::string & piece)>;

struct EngineParams {  // defaults: Python's decoding.EngineOptions
    int n_ctx = 0;  // KV cells per sequence
    int n_batch = 0;
    int n_threads = 0;
};

// The model of each sequence of a slot, as an index into the engine's models.
using SlotLayout = std::vector<int>;

class Engine {
public:
    // models[0] writes the answers; every other model must share its vocabulary.
    Engine(const std::vector<const Model *> & models, const std::vector<SlotLayout> & slots,
           const EngineParams & params);

    int n_slots() const { return (int) slots_.size(); }

    // Brings the KV cache of each sequence of a slot to its prompt, evaluating only what differs
    // from what it already holds (always at least the last token, whose logits start the next
    // step). Returns the number of tokens evaluated.
    int64_t sync(int slot, const std::vector<std::vector<llama_token>> & prompts);

    // Empties a slot's KV caches: its next sync evaluates whole prompts. A prompt's last token read
    // alone rounds differently from the whole prompt read at once (by up to 0.8 here), so a server
    // forgets a slot between requests to give each request the answer it gets in any slot.
    void forget(int slot);

    // Generates in the given slots side by side: steering[i] and sampling[i] belong to slots[i].
    // Every slot must have been synced. A grammar is a hard constraint and the guard a soft one: the
    // guard admits the tokens the LLM finds plausible among those the grammar allows, so a grammar
    // that rules out all of the LLM's favourites never leaves a step without a token.
    std::vector<GenerationResult> generate(const std::vector<int> & slots,
                                           const std::vector<Steering> & steering,
                                           const std::vector<SamplingParams> & sampling,
                                           const PieceCallback & on_piece);

    // A slot's current next-token logits: of one sequence, or fused by a steering (before the
    // plausibility guard) at the step after `answer` (the text generated so far, which the length
    // hazard reads), and the tokens the guard admits.
    std::vector<float> logits(int slot, int sequence) const;
    std::vector<float> fused_logits(int slot, const Steering & steering, const std::string & answer = "") const;
    std::vector<llama_token> plausible(int slot, const Steering & steering) const;

    // The decode calls of n steps of every slot with no fusion or sampling: the lower bound.
    void raw_steps(int n);

    // Bytes of KV cache holding the sequences' tokens now.
    size_t kv_bytes() const;

private:
    struct Sequence {
        int model;
        llama_seq_id id;                  // in its model's context
        std::vector<llama_token> history; // tokens in its KV cache
        std::vector<float> logits;        // its last logits
    };

    int64_t sync_model(int model, std::vector<Sequence *> & seqs, const std::vector<const std::vector<llama_token> *> & prompts);
    void step(const std::vector<std::pair<int, llama_token>> & advance, bool keep_logits);
    void check_steering(int slot, const Steering & steering) const;
    // Returns the end-of-generation token the length hazard raised past the guard, or -1.
    llama_token fuse(int slot, const Steering & steering, const std::string & answer, float * out) const;
    bool full(int slot) const;
    const Sequence & sequence(int slot, int index) const;

    std::vector<const Model *> models_;
    EngineParams params_;
    std::vector<ContextPtr> contexts_;          // one per model
    std::vector<std::vector<Sequence>> slots_;
    std::vector<llama_token> eog_tokens_;        // of models[0]
    int n_ctx_seq_ = 0;
    int n_vocab_ = 0;                            // of models[0]: the answers' tokens
};

}  // namespace drift
