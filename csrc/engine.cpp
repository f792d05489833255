#include "engine.h"

#include "batch.h"
#include "guard.h"
#include "length.h"
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

// llama.cpp's sampler chain, applied below to the fused logits array: the repetition penalties
// and DRY first, as llama.cpp's common sampler orders them, then greedy or the truncations.
SamplerPtr make_sampler(const SamplingParams & p, const Model & writer, int n_ctx) {
    SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
    if (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
        llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(writer.n_vocab(), p.penalty_last_n,
                                                                          p.repeat_penalty, p.frequency_penalty,
                                                                          p.presence_penalty));
    }
    if (p.dry_multiplier > 0.0f) {
        static const char * breakers[] = {"\n", ":", "\"", "*"};  // llama.cpp's default sequence breakers
        // This llama.cpp takes a count: -1 ("the whole context") is resolved here, as its common library does.
        const int last_n = p.dry_penalty_last_n < 0 ? n_ctx : p.dry_penalty_last_n;
        llama_sampler_chain_add(chain.get(), llama_sampler_init_dry(writer.vocab(), p.dry_multiplier, p.dry_base,
                                                                    p.dry_allowed_length, last_n, breakers, 4));
    }
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

// llama.cpp's grammar sampler, or null for no grammar.
SamplerPtr make_grammar(const Model & writer, const std::string & grammar) {
    if (grammar.empty()) {
        return nullptr;
    }
    SamplerPtr out(llama_sampler_init_grammar(writer.vocab(), grammar.c_str(), "root"));
    if (!out) {
        throw std::invalid_argument("the grammar is not GBNF with a 'root' rule that llama.cpp can parse "
                                    "(llama.cpp printed why on stderr)");
    }
    return out;
}

// Drops the candidates the grammar rules out (it sets their logits to -inf; a fused logit is finite).
void keep_allowed(llama_sampler * grammar, std::vector<llama_token_data> & candidates) {
    llama_token_data_array array = {candidates.data(), candidates.size(), -1, false};
    llama_sampler_apply(grammar, &array);
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [](const llama_token_data & c) { return std::isinf(c.logit); }),
                     candidates.end());
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

void check_grammar(const Model & model, const std::string & grammar) {
    make_grammar(model, grammar);
}

Engine::Engine(const std::vector<const Model *> & models, const std::vector<SlotLayout> & slots,
               const EngineParams & params)
    : models_(models), params_(params) {
    if (models.empty() || slots.empty()) {
        throw std::invalid_argument("an engine needs at least one model and one slot");
    }
    for (size_t m = 1; m < models.size(); ++m) {
        check_vocab_compatible(*models[0], *models[m]);
    }
    n_vocab_ = models[0]->n_vocab();
    n_ctx_seq_ = params.n_ctx;

    // Number the sequences of each model across slots: their ids in that model's context.
    std::vector<int> n_seq(models.size(), 0);
    for (const auto & layout : slots) {
        if (layout.empty()) {
            throw std::invalid_argument("a slot needs at least one sequence");
        }
        std::vector<Sequence> seqs;
        for (int m : layout) {
            if (m < 0 || m >= (int) models.size()) {
                throw std::invalid_argument("no model " + std::to_string(m));
            }
            seqs.push_back({m, (llama_seq_id) n_seq[m]++, {}, {}});
        }
        slots_.push_back(std::move(seqs));
    }
    for (llama_token t = 0; t < n_vocab_; ++t) {
        if (models[0]->is_eog(t)) {
            eog_tokens_.push_back(t);
        }
    }
    for (size_t m = 0; m < models.size(); ++m) {
        if (n_seq[m] == 0) {
            contexts_.emplace_back();  // a model no sequence uses needs no KV cache
            continue;
        }
        // One KV cache per sequence: a non-unified cache gives each sequence its own.
        ContextParams cparams;
        cparams.n_batch = params.n_batch;
        cparams.n_threads = params.n_threads;
        cparams.n_ctx = params.n_ctx * n_seq[m];
        cparams.n_seq_max = n_seq[m];
        cparams.kv_unified = false;
        contexts_.emplace_back(models[m]->new_context(cparams));
        n_ctx_seq_ = std::min<int>(n_ctx_seq_, llama_n_ctx_seq(contexts_.back().get()));
    }
}

const Engine::Sequence & Engine::sequence(int slot, int index) const {
    if (slot < 0 || slot >= n_slots()) {
        throw std::out_of_range("no slot " + std::to_string(slot));
    }
    if (index < 0 || index >= (int) slots_[slot].size()) {
        throw std::out_of_range("slot " + std::to_string(slot) + " has no sequence " + std::to_string(index));
    }
    return slots_[slot][index];
}

int64_t Engine::sync(int slot, const std::vector<std::vector<llama_token>> & prompts) {
    sequence(slot, 0);  // checks the slot
    auto & seqs = slots_[slot];
    if (prompts.size() != seqs.size()) {
        throw std::invalid_argument("expected " + std::to_string(seqs.size()) + " prompts, got " +
                                    std::to_string(prompts.size()));
    }
    int64_t evaluated = 0;
    for (int m = 0; m < (int) models_.size(); ++m) {
        std::vector<Sequence *> of_model;
        std::vector<const std::vector<llama_token> *> their_prompts;
        for (size_t s = 0; s < seqs.size(); ++s) {
            if (seqs[s].model == m) {
                of_model.push_back(&seqs[s]);
                their_prompts.push_back(&prompts[s]);
            }
        }
        if (!of_model.empty()) {
            evaluated += sync_model(m, of_model, their_prompts);
        }
    }
    return evaluated;
}

void Engine::forget(int slot) {
    sequence(slot, 0);  // checks the slot
    for (auto & seq : slots_[slot]) {
        llama_memory_seq_rm(llama_get_memory(contexts_[seq.model].get()), seq.id, -1, -1);
        seq.history.clear();
        seq.logits.clear();
    }
}

int64_t Engine::sync_model(int model, std::vector<Sequence *> & seqs,
                           const std::vector<const std::vector<llama_token> *> & prompts) {
    llama_context * ctx = contexts_[model].get();
    llama_memory_t mem = llama_get_memory(ctx);
    const int n_vocab = models_[model]->n_vocab();
    Batch batch(params_.n_batch);
    std::vector<std::pair<Sequence *, int>> outputs;  // (sequence, batch index)
    int64_t evaluated = 0;

    auto flush = [&]() {
        if (batch.size() == 0) {
            return;
        }
        batch.decode(ctx);
        evaluated += batch.size();
        for (auto [seq, index] : outputs) {
            const float * row = llama_get_logits_ith(ctx, index);
            seq->logits.assign(row, row + n_vocab);
        }
        batch.clear();
        outputs.clear();
    };

    for (size_t i = 0; i < seqs.size(); ++i) {
        Sequence & seq = *seqs[i];
        const auto & prompt = *prompts[i];
        if (prompt.empty()) {
            throw std::invalid_argument("empty prompt for a sequence");
        }
        if ((int) prompt.size() >= n_ctx_seq_) {
            throw std::invalid_argument("the prompt has " + std::to_string(prompt.size()) +
                                        " tokens but the context holds " + std::to_string(n_ctx_seq_));
        }
        // Keep the common prefix, minus the last prompt token whose logits are needed.
        auto & history = seq.history;
        size_t keep = std::mismatch(history.begin(), history.end(), prompt.begin(), prompt.end()).first - history.begin();
        keep = std::min(keep, prompt.size() - 1);
        llama_memory_seq_rm(mem, seq.id, (llama_pos) keep, -1);
        history.assign(prompt.begin(), prompt.begin() + keep);
        for (size_t t = keep; t < prompt.size(); ++t) {
            const bool is_last = t + 1 == prompt.size();
            const int index = batch.add(prompt[t], (llama_pos) t, seq.id, is_last);
            history.push_back(prompt[t]);
            if (is_last) {
                outputs.emplace_back(&seq, index);
            }
            if (batch.full()) {
                flush();
            }
        }
        // One decode per sequence's prompt: this llama.cpp's logits for a sequence change (by up to 0.5
        // here) once a multi-sequence batch holds 32 tokens or more (llama.cpp issue #24962), so a
        // sequence read alone gets the logits it gets in any company.
        flush();
    }
    return evaluated;
}

void Engine::step(const std::vector<std::pair<int, llama_token>> & advance, bool keep_logits) {
    for (int m = 0; m < (int) models_.size(); ++m) {
        std::vector<Sequence *> stepped;
        for (auto [slot, token] : advance) {
            for (auto & seq : slots_[slot]) {
                if (seq.model == m) {
                    stepped.push_back(&seq);
                }
            }
        }
        if (stepped.empty()) {
            continue;
        }
        Batch batch((int) stepped.size());
        for (auto [slot, token] : advance) {
            for (auto & seq : slots_[slot]) {
                if (seq.model == m) {
                    batch.add(token, (llama_pos) seq.history.size(), seq.id, true);
                    seq.history.push_back(token);
                }
            }
        }
        llama_context * ctx = contexts_[m].get();
        batch.decode(ctx);
        if (!keep_logits) {
            continue;
        }
        const int n_vocab = models_[m]->n_vocab();
        for (size_t i = 0; i < stepped.size(); ++i) {
            const float * row = llama_get_logits_ith(ctx, (int32_t) i);
            stepped[i]->logits.assign(row, row + n_vocab);
        }
    }
}

bool Engine::full(int slot) const {
    for (const auto & seq : slots_[slot]) {
        if ((int) seq.history.size() >= n_ctx_seq_) {
            return true;
        }
    }
    return false;
}

void Engine::check_steering(int slot, const Steering & steering) const {
    const auto & seqs = slots_.at(slot);
    const auto & coefficients = steering.coefficients;
    if (coefficients.size() != seqs.size()) {
        throw std::invalid_argument("expected " + std::to_string(seqs.size()) + " coefficients, got " +
                                    std::to_string(coefficients.size()));
    }
    for (float c : coefficients) {
        if (!std::isfinite(c)) {
            throw std::invalid_argument("formula coefficients must be finite");
        }
    }
    for (auto [token, value] : steering.token_bias) {
        if (token < 0 || token >= n_vocab_) {
            throw std::out_of_range("no token " + std::to_string(token) + " in the vocabulary");
        }
        if (!std::isfinite(value)) {
            throw std::invalid_argument("token biases must be finite");
        }
    }
    if (!std::isfinite(steering.eog_bias)) {
        throw std::invalid_argument("the end-of-generation bias must be finite");
    }
    if (!(steering.plausibility >= 0.0f && steering.plausibility < 1.0f)) {
        throw std::invalid_argument("plausibility must be in [0, 1)");
    }
    if (!(steering.max_kl >= 0.0f && std::isfinite(steering.max_kl))) {
        throw std::invalid_argument("max_kl must be a finite number >= 0");
    }
    if (!(steering.length_target >= 0.0f && std::isfinite(steering.length_target) && std::isfinite(steering.length_rate))) {
        throw std::invalid_argument("length_target must be a finite number >= 0 and length_rate finite");
    }
    if (seqs[0].model != 0) {
        throw std::invalid_argument("a slot's first sequence must be the LLM's: the guard's reference");
    }
    for (const auto & seq : seqs) {
        if (seq.logits.empty()) {
            throw std::logic_error("sync() must run before generation");
        }
    }
}

llama_token Engine::fuse(int slot, const Steering & steering, const std::string & answer, float * out) const {
    std::vector<const float *> rows;
    std::vector<int> sizes;
    for (const auto & seq : slots_[slot]) {
        rows.push_back(seq.logits.data());
        sizes.push_back((int) seq.logits.size());
    }
    weighted_sum(rows, sizes, steering.coefficients, n_vocab_, out);
    for (auto [token, value] : steering.token_bias) {
        out[token] += value;
    }
    if (steering.eog_bias != 0.0f) {
        for (llama_token t : eog_tokens_) {
            out[t] += steering.eog_bias;
        }
    }
    if (steering.max_kl > 0.0f) {  // out = llm + s (out - llm), s the largest within the trust region
        const float * llm = slots_[slot][0].logits.data();
        const float s = trust_scale(llm, out, n_vocab_, steering.max_kl);
        for (int v = 0; v < n_vocab_; ++v) {
            out[v] = llm[v] + s * (out[v] - llm[v]);
        }
    }
    // After the trust region: the hazard decides when to stop, it is not steering to be scaled down.
    return length_hazard(out, n_vocab_, eog_tokens_, steering.length_target, steering.length_rate, answer);
}

std::vector<float> Engine::logits(int slot, int index) const {
    return sequence(slot, index).logits;
}

std::vector<float> Engine::fused_logits(int slot, const Steering & steering, const std::string & answer) const {
    sequence(slot, 0);
    check_steering(slot, steering);
    std::vector<float> out(n_vocab_);
    fuse(slot, steering, answer, out.data());
    return out;
}

std::vector<llama_token> Engine::plausible(int slot, const Steering & steering) const {
    sequence(slot, 0);
    check_steering(slot, steering);
    return plausible_tokens(slots_[slot][0].logits.data(), n_vocab_, steering.plausibility);
}

std::vector<GenerationResult> Engine::generate(const std::vector<int> & slots,
                                               const std::vector<Steering> & steering,
                                               const std::vector<SamplingParams> & sampling,
                                               const PieceCallback & on_piece) {
    if (steering.size() != slots.size() || sampling.size() != slots.size()) {
        throw std::invalid_argument("one steering and one set of sampling parameters per slot");
    }
    for (size_t i = 0; i < slots.size(); ++i) {
        sequence(slots[i], 0);
        check_steering(slots[i], steering[i]);
        if (sampling[i].max_tokens < 0) {
            throw std::invalid_argument("max_tokens cannot be negative");
        }
        for (auto [token, value] : sampling[i].logit_bias) {
            if (token < 0 || token >= n_vocab_) {
                throw std::out_of_range("logit_bias: no token " + std::to_string(token) + " in the vocabulary");
            }
            if (!std::isfinite(value)) {
                throw std::invalid_argument("logit_bias values must be finite");
            }
        }
        for (size_t j = 0; j < i; ++j) {
            if (slots[j] == slots[i]) {
                throw std::invalid_argument("slot " + std::to_string(slots[i]) + " is given twice");
            }
        }
    }

    // What each running slot carries from step to step.
    struct Run {
        SamplerPtr sampler;
        SamplerPtr grammar;  // null: none
        GenerationResult result;
        size_t emitted = 0;  // bytes of result.text handed to on_piece
        int steps = 0;
        bool done = false;
    };
    const auto start = std::chrono::steady_clock::now();
    const Model & writer = *models_[0];
    std::vector<Run> runs(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        runs[i].sampler = make_sampler(sampling[i], writer, n_ctx_seq_);
        runs[i].grammar = make_grammar(writer, sampling[i].grammar);
        runs[i].result.finish_reason = "length";
        runs[i].done = sampling[i].max_tokens == 0;
    }
    std::vector<float> fused(n_vocab_);
    std::vector<float> biased;  // the guard's reference under a logit_bias
    std::vector<llama_token_data> candidates;
    candidates.reserve(n_vocab_);

    // The candidates of slot i: the tokens the guard admits (as after llama.cpp's own truncations)
    // among the tokens its grammar allows.
    auto admit = [&](size_t i, const float * reference) {
        const float alpha = steering[i].plausibility;
        llama_sampler * grammar = runs[i].grammar.get();
        candidates.clear();
        for (llama_token v : plausible_tokens(reference, n_vocab_, alpha)) {
            candidates.push_back({v, fused[v], 0.0f});
        }
        if (grammar == nullptr) {
            return;
        }
        keep_allowed(grammar, candidates);
        float best = -INFINITY;
        for (const auto & c : candidates) {
            best = std::max(best, reference[c.id]);
        }
        if (alpha > 0.0f && best < *std::max_element(reference, reference + n_vocab_)) {
            // The grammar rules out the LLM's top token: the guard's floor is taken from the best token
            // the grammar allows, over the whole vocabulary (a grammar pass over every token, so only
            // on such steps).
            candidates.clear();
            for (llama_token v = 0; v < n_vocab_; ++v) {
                candidates.push_back({v, fused[v], 0.0f});
            }
            keep_allowed(grammar, candidates);
            best = -INFINITY;
            for (const auto & c : candidates) {
                best = std::max(best, reference[c.id]);
            }
            const float floor = best + std::log(alpha);
            candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                            [&](const llama_token_data & c) { return reference[c.id] < floor; }),
                             candidates.end());
        }
        if (candidates.empty()) {
            throw std::runtime_error("the grammar allows no next token");
        }
    };

    auto emit = [&](size_t i, size_t end) {  // false: the caller asked to stop
        Run & run = runs[i];
        end = std::max(run.emitted, end);
        const bool go_on = !on_piece || on_piece(slots[i], run.result.text.substr(run.emitted, end - run.emitted));
        run.emitted = end;
        return go_on;
    };

    // Samples slot i's next token; returns false when the slot has finished.
    auto sample = [&](size_t i, llama_token & token) {
        Run & run = runs[i];
        GenerationResult & result = run.result;
        const SamplingParams & p = sampling[i];
        const int slot = slots[i];
        const llama_token raised = fuse(slot, steering[i], result.text, fused.data());
        const auto & plain = slots_[slot][0].logits;
        if (p.entropy_stats) {  // of the fused logits before the guard
            result.entropy_plain_bits += entropy_bits(plain.data(), (int) plain.size());
            result.entropy_fused_bits += entropy_bits(fused.data(), n_vocab_);
        }
        const float * reference = plain.data();
        if (!p.logit_bias.empty()) {
            biased.assign(plain.begin(), plain.begin() + n_vocab_);
            for (auto [token, value] : p.logit_bias) {
                biased[token] += value;
                fused[token] += value;
            }
            reference = biased.data();
        }
        admit(i, reference);
        // The length hazard's end of generation comes just after the LLM's own sentence end: admitted
        // past the guard (never past a grammar, which allows it only where it is complete).
        if (raised >= 0 && !run.grammar && std::none_of(candidates.begin(), candidates.end(),
                                                        [&](const llama_token_data & c) { return c.id == raised; })) {
            candidates.push_back({raised, fused[raised], 0.0f});
        }
        llama_token_data_array cur_p = {candidates.data(), candidates.size(), -1, false};
        llama_sampler_apply(run.sampler.get(), &cur_p);
        token = cur_p.data[cur_p.selected].id;
        llama_sampler_accept(run.sampler.get(), token);
        run.steps += 1;

        if (writer.is_eog(token)) {  // allowed by a grammar only where it is complete; nothing to accept
            result.finish_reason = "stop";
            return false;
        }
        if (run.grammar) {
            llama_sampler_accept(run.grammar.get(), token);
        }
        result.tokens.push_back(token);
        result.text += writer.piece(token);

        size_t stop_at = std::string::npos;
        for (const auto & stop : p.stop) {
            stop_at = std::min(stop_at, result.text.find(stop, run.emitted));
        }
        if (stop_at != std::string::npos) {
            result.text.resize(stop_at);
            result.finish_reason = "stop";
            return false;
        }
        if (!emit(i, complete_utf8(result.text, result.text.size() - stop_holdback(result.text, p.stop)))) {
            result.finish_reason = "interrupted";
            return false;
        }
        if (run.steps >= p.max_tokens || full(slot)) {
            result.finish_reason = "length";
            return false;
        }
        return true;
    };

    std::vector<std::pair<int, llama_token>> advance;
    while (true) {
        advance.clear();
        for (size_t i = 0; i < runs.size(); ++i) {
            llama_token token;
            if (!runs[i].done) {
                runs[i].done = !sample(i, token);
                if (!runs[i].done) {
                    advance.emplace_back(slots[i], token);
                }
            }
        }
        if (advance.empty()) {
            break;
        }
        step(advance, true);
    }

    std::vector<GenerationResult> results;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (size_t i = 0; i < runs.size(); ++i) {
        Run & run = runs[i];
        if (run.result.finish_reason != "interrupted" && run.emitted < run.result.text.size()) {
            emit(i, run.result.text.size());
        }
        if (sampling[i].entropy_stats && run.steps > 0) {
            run.result.entropy_plain_bits /= run.steps;
            run.result.entropy_fused_bits /= run.steps;
        }
        run.result.seconds = seconds;
        results.push_back(std::move(run.result));
    }
    return results;
}

void Engine::raw_steps(int n) {
    const llama_token token = std::max(llama_vocab_bos(models_[0]->vocab()), 0);
    std::vector<std::pair<int, llama_token>> advance;
    for (int slot = 0; slot < n_slots(); ++slot) {
        advance.emplace_back(slot, token);
    }
    for (int i = 0; i < n; ++i) {
        for (int slot = 0; slot < n_slots(); ++slot) {
            if (full(slot)) {
                return;
            }
        }
        step(advance, false);
    }
}

size_t Engine::kv_bytes() const {
    size_t bytes = 0;
    for (const auto & seqs : slots_) {
        for (const auto & seq : seqs) {
            bytes += llama_state_seq_get_size(contexts_[seq.model].get(), seq.id);
        }
    }
    return bytes;
}

}  // namespace drift
