#include "engine.h"

#include "batch.h"
#include "logits.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace drift {

namespace {

struct SamplerDeleter {
    void operator()(llama_sampler * s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// llama.cpp's sampler chain, applied below to the fused logits array.
SamplerPtr make_sampler(const SamplingParams & p) {
    SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
    if (p.temperature <= 0.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
        return chain;
    }
    if (p.top_k > 0) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.top_k));
    }
    if (p.top_p < 1.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.top_p, 1));
    }
    if (p.min_p > 0.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.min_p, 1));
    }
    llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(p.seed));
    return chain;
}

// Length of the longest prefix of text that ends on a whole UTF-8 character.
size_t complete_utf8(const std::string & text, size_t end) {
    for (size_t back = 1; back <= 4 && back <= end; ++back) {
        const unsigned char c = text[end - back];
        if ((c & 0xC0) == 0x80) {
            continue;  // continuation byte
        }
        const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
        return len <= back ? end : end - back;
    }
    return end;
}

// Bytes at the end of text that could still grow into a stop string.
size_t stop_holdback(const std::string & text, const std::vector<std::string> & stops) {
    size_t hold = 0;
    for (const auto & stop : stops) {
        for (size_t n = std::min(stop.size() - 1, text.size()); n > hold; --n) {
            if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
                hold = n;
                break;
            }
        }
    }
    return hold;
}

}  // namespace

Engine::Engine(const Model & llm, const Model & slm, int n_attributes, bool share_base, const EngineParams & params)
    : llm_model_(llm), slm_model_(slm), n_attributes_(n_attributes), share_base_(share_base), params_(params) {
    if (n_attributes < 0) {
        throw std::invalid_argument("the number of attributes cannot be negative");
    }
    if (share_base && &llm != &slm) {
        throw std::invalid_argument("the base can only be shared when the LLM is the sLM");
    }
    if (n_attributes > 0 && &llm != &slm) {
        check_vocab_compatible(llm, slm);
    }
    ContextParams cparams;
    cparams.n_batch = params.n_batch;
    cparams.n_threads = params.n_threads;
    n_ctx_seq_ = params.n_ctx;
    if (!share_base) {
        cparams.n_ctx = params.n_ctx;
        cparams.n_seq_max = 1;
        llm_ctx_.reset(llm.new_context(cparams));
        llm_seqs_ = {llm_ctx_.get(), {{}}, {{}}};
        n_ctx_seq_ = std::min<int>(n_ctx_seq_, llama_n_ctx_seq(llm_ctx_.get()));
    }
    if (share_base || n_attributes > 0) {
        // One KV cache per system prompt: a non-unified cache gives each sequence its own.
        const int n_seq = n_attributes + 1;
        cparams.n_ctx = params.n_ctx * n_seq;
        cparams.n_seq_max = n_seq;
        cparams.kv_unified = false;
        slm_ctx_.reset(slm.new_context(cparams));
        slm_seqs_ = {slm_ctx_.get(), std::vector<std::vector<llama_token>>(n_seq),
                     std::vector<std::vector<float>>(n_seq)};
        n_ctx_seq_ = std::min<int>(n_ctx_seq_, llama_n_ctx_seq(slm_ctx_.get()));
    }
}

int64_t Engine::sync(const std::vector<llama_token> & llm_prompt,
                     const std::vector<std::vector<llama_token>> & slm_prompts) {
    if (slm_prompts.size() != slm_seqs_.history.size()) {
        throw std::invalid_argument("expected " + std::to_string(slm_seqs_.history.size()) + " sLM prompts, got " +
                                    std::to_string(slm_prompts.size()));
    }
    int64_t evaluated = 0;
    if (llm_seqs_.ctx) {
        evaluated += sync_context(llm_seqs_, {llm_prompt});
    }
    if (slm_seqs_.ctx) {
        evaluated += sync_context(slm_seqs_, slm_prompts);
    }
    return evaluated;
}

int64_t Engine::sync_context(Sequences & seqs, const std::vector<std::vector<llama_token>> & prompts) {
    llama_memory_t mem = llama_get_memory(seqs.ctx);
    Batch batch(params_.n_batch);
    std::vector<std::pair<int, int>> outputs;  // (sequence, batch index)
    int64_t evaluated = 0;

    auto flush = [&]() {
        if (batch.size() == 0) {
            return;
        }
        batch.decode(seqs.ctx);
        evaluated += batch.size();
        const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(seqs.ctx)));
        for (auto [s, index] : outputs) {
            const float * row = llama_get_logits_ith(seqs.ctx, index);
            seqs.logits[s].assign(row, row + n_vocab);
        }
        batch.clear();
        outputs.clear();
    };

    for (size_t s = 0; s < prompts.size(); ++s) {
        const auto & prompt = prompts[s];
        auto & history = seqs.history[s];
        if (prompt.empty()) {
            throw std::invalid_argument("empty prompt for sequence " + std::to_string(s));
        }
        if ((int) prompt.size() >= n_ctx_seq_) {
            throw std::invalid_argument("the prompt has " + std::to_string(prompt.size()) +
                                        " tokens but the context holds " + std::to_string(n_ctx_seq_));
        }
        // Keep the common prefix, minus the last prompt token whose logits are needed.
        size_t keep = std::mismatch(history.begin(), history.end(), prompt.begin(), prompt.end()).first - history.begin();
        keep = std::min(keep, prompt.size() - 1);
        llama_memory_seq_rm(mem, (llama_seq_id) s, (llama_pos) keep, -1);
        history.assign(prompt.begin(), prompt.begin() + keep);
        for (size_t t = keep; t < prompt.size(); ++t) {
            const bool is_last = t + 1 == prompt.size();
            const int index = batch.add(prompt[t], (llama_pos) t, (llama_seq_id) s, is_last);
            history.push_back(prompt[t]);
            if (is_last) {
                outputs.emplace_back((int) s, index);
            }
            if (batch.full()) {
                flush();
            }
        }
    }
    flush();
    return evaluated;
}

void Engine::step(Sequences & seqs, llama_token token, bool keep_logits) {
    Batch batch(seqs.history.size());
    for (size_t s = 0; s < seqs.history.size(); ++s) {
        batch.add(token, (llama_pos) seqs.history[s].size(), (llama_seq_id) s, true);
        seqs.history[s].push_back(token);
    }
    batch.decode(seqs.ctx);
    if (!keep_logits) {
        return;
    }
    const int n_vocab = (int) seqs.logits[0].size();
    for (size_t s = 0; s < seqs.history.size(); ++s) {
        const float * row = llama_get_logits_ith(seqs.ctx, (int32_t) s);
        seqs.logits[s].assign(row, row + n_vocab);
    }
}

const std::vector<float> & Engine::llm_logits() const {
    return share_base_ ? slm_seqs_.logits[0] : llm_seqs_.logits[0];
}

bool Engine::full() const {
    for (const Sequences * seqs : {&llm_seqs_, &slm_seqs_}) {
        for (const auto & history : seqs->history) {
            if ((int) history.size() >= n_ctx_seq_) {
                return true;
            }
        }
    }
    return false;
}

void Engine::check_weights(const std::vector<float> & weights, float beta) const {
    if ((int) weights.size() != n_attributes_) {
        throw std::invalid_argument("expected " + std::to_string(n_attributes_) + " weights, got " +
                                    std::to_string(weights.size()));
    }
    if (!(beta > 0.0f)) {
        throw std::invalid_argument("beta must be positive");
    }
    if (llm_logits().empty()) {
        throw std::logic_error("sync() must run before generation");
    }
}

void Engine::fuse(const std::vector<float> & weights, float beta, float * out) const {
    const auto & h_llm = llm_logits();
    if (n_attributes_ == 0) {
        std::copy(h_llm.begin(), h_llm.end(), out);
        return;
    }
    std::vector<const float *> h_attr;
    for (int i = 1; i <= n_attributes_; ++i) {
        h_attr.push_back(slm_seqs_.logits[i].data());
    }
    fuse_logits(h_llm.data(), (int) h_llm.size(), slm_seqs_.logits[0].data(), h_attr, weights, beta,
                (int) slm_seqs_.logits[0].size(), out);
}

std::vector<float> Engine::logits(int sequence) const {
    if (sequence == -1) {
        return llm_logits();
    }
    if (sequence < 0 || sequence >= (int) slm_seqs_.logits.size()) {
        throw std::out_of_range("no sequence " + std::to_string(sequence));
    }
    return slm_seqs_.logits[sequence];
}

std::vector<float> Engine::fused_logits(const std::vector<float> & weights, float beta) const {
    check_weights(weights, beta);
    std::vector<float> out(llm_logits().size());
    fuse(weights, beta, out.data());
    return out;
}

GenerationResult Engine::generate(const std::vector<float> & weights, float beta, const SamplingParams & sampling,
                                  const PieceCallback & on_piece) {
    check_weights(weights, beta);
    if (sampling.max_tokens < 0) {
        throw std::invalid_argument("max_tokens cannot be negative");
    }
    const auto start = std::chrono::steady_clock::now();
    SamplerPtr sampler = make_sampler(sampling);
    const int n_vocab = (int) llm_logits().size();
    std::vector<float> fused(n_vocab);
    std::vector<llama_token_data> candidates(n_vocab);

    GenerationResult result;
    result.finish_reason = "length";
    size_t emitted = 0;  // bytes of result.text handed to on_piece
    auto emit = [&](size_t end) {
        if (end > emitted && on_piece && !on_piece(result.text.substr(emitted, end - emitted))) {
            result.finish_reason = "interrupted";
        }
        emitted = std::max(emitted, end);
    };

    int steps = 0;
    for (; steps < sampling.max_tokens; ++steps) {
        fuse(weights, beta, fused.data());
        if (sampling.entropy_stats) {
            result.entropy_plain_bits += entropy_bits(llm_logits().data(), n_vocab);
            result.entropy_fused_bits += entropy_bits(fused.data(), n_vocab);
        }
        for (int v = 0; v < n_vocab; ++v) {
            candidates[v] = {v, fused[v], 0.0f};
        }
        llama_token_data_array cur_p = {candidates.data(), candidates.size(), -1, false};
        llama_sampler_apply(sampler.get(), &cur_p);
        const llama_token token = cur_p.data[cur_p.selected].id;
        llama_sampler_accept(sampler.get(), token);

        if (llm_model_.is_eog(token)) {
            result.finish_reason = "stop";
            break;
        }
        result.tokens.push_back(token);
        result.text += llm_model_.piece(token);

        const size_t search_from = emitted;
        size_t stop_at = std::string::npos;
        for (const auto & stop : sampling.stop) {
            stop_at = std::min(stop_at, result.text.find(stop, search_from));
        }
        if (stop_at != std::string::npos) {
            result.text.resize(stop_at);
            result.finish_reason = "stop";
            break;
        }
        emit(complete_utf8(result.text, result.text.size() - stop_holdback(result.text, sampling.stop)));
        if (result.finish_reason == "interrupted") {
            break;
        }
        if (full()) {
            result.finish_reason = "length";
            break;
        }
        if (llm_seqs_.ctx) {
            step(llm_seqs_, token, true);
        }
        if (slm_seqs_.ctx) {
            step(slm_seqs_, token, true);
        }
    }
    if (result.finish_reason != "interrupted") {
        emit(result.text.size());
    }
    if (sampling.entropy_stats && sampling.max_tokens > 0) {
        // A step that breaks out of the loop still sampled once.
        const int sampled = std::min(steps + 1, sampling.max_tokens);
        result.entropy_plain_bits /= sampled;
        result.entropy_fused_bits /= sampled;
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
}

void Engine::raw_steps(int n) {
    const llama_token token = llama_vocab_bos(llm_model_.vocab()) >= 0 ? llama_vocab_bos(llm_model_.vocab()) : 0;
    for (int i = 0; i < n && !full(); ++i) {
        if (llm_seqs_.ctx) {
            step(llm_seqs_, token, false);
        }
        if (slm_seqs_.ctx) {
            step(slm_seqs_, token, false);
        }
    }
}

size_t Engine::kv_bytes() const {
    size_t bytes = 0;
    for (const Sequences * seqs : {&llm_seqs_, &slm_seqs_}) {
        for (size_t s = 0; seqs->ctx && s < seqs->history.size(); ++s) {
            bytes += llama_state_seq_get_size(seqs->ctx, (llama_seq_id) s);
        }
    }
    return bytes;
}

}  // namespace drift
