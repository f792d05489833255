// The Python binding layer: the only file that knows Python types.
#include "engine.h"
#include "length.h"
#include "model.h"
#include "scorer.h"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
using namespace drift;

namespace {

// Runs with the GIL released; takes it back only to let Ctrl-C through.
void check_signals() {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
        throw py::error_already_set();
    }
}

py::str utf8(const std::string & text) {
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(text.data(), text.size(), "replace"));
}

py::array_t<float> to_numpy(std::vector<float> values) {
    py::array_t<float> out(values.size());
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "drift-cpp native core over llama.cpp";

    // Every error the core throws reaches Python as the one user-facing DriftError, with its
    // one-line message; pybind11's own errors (bad arguments) and MemoryError keep their types.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) {
                std::rethrow_exception(p);
            }
        } catch (const py::builtin_exception &) {
            throw;
        } catch (const std::bad_alloc &) {
            throw;
        } catch (const std::exception & e) {
            py::object error = py::module_::import("drift_cpp.errors").attr("DriftError");
            PyErr_SetString(error.ptr(), e.what());
        }
    });

    m.def("set_logging", &set_logging, py::arg("enabled"));
    m.def("check_vocab_compatible", &check_vocab_compatible, py::arg("llm"), py::arg("slm"));
    m.def("extra_buffers_safe", &extra_buffers_safe);
    m.def("count_words", [](const std::string & text) { return count_words(text); }, py::arg("text"));
    m.def("at_sentence_end", [](const std::string & text) { return at_sentence_end(text); }, py::arg("text"));
    m.def("check_grammar", &check_grammar, py::arg("model"), py::arg("grammar"));

    py::class_<Model>(m, "Model")
        .def(py::init([](const std::string & path, int n_gpu_layers) {
                 ModelParams params;
                 params.n_gpu_layers = n_gpu_layers;
                 return new Model(path, params);
             }),
             py::arg("path"), py::arg("n_gpu_layers") = 0, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("description", &Model::description)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("chat_template", &Model::chat_template)
        .def_property_readonly("bos_token", [](const Model & self) { return llama_vocab_bos(self.vocab()); })
        .def_property_readonly("eos_token", [](const Model & self) { return llama_vocab_eos(self.vocab()); })
        .def("meta", &Model::meta, py::arg("key"))
        .def("token_text", [](const Model & self, int token) { return std::string(llama_vocab_get_text(self.vocab(), token)); })
        // Without the GIL: a long text must not freeze the server's other threads.
        .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special") = false, py::arg("parse_special") = true,
             py::call_guard<py::gil_scoped_release>())
        .def("detokenize", [](const Model & self, const std::vector<llama_token> & tokens) {
            return py::bytes(self.detokenize(tokens));
        })
        .def("is_eog", &Model::is_eog);

    py::class_<Scorer>(m, "Scorer")
        .def(py::init([](const Model & model, int n_ctx, int n_batch, int n_threads) {
                 ContextParams params;
                 params.n_ctx = n_ctx;
                 params.n_batch = n_batch;
                 params.n_threads = n_threads;
                 return new Scorer(model, params);
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("n_batch") = 512, py::arg("n_threads") = 0,
             py::keep_alive<1, 2>())
        .def_property_readonly("n_ctx", &Scorer::n_ctx)
        .def(
            "score",
            [](Scorer & self, const std::vector<std::pair<std::vector<llama_token>, std::vector<llama_token>>> & pairs,
               bool per_token, const std::function<void(int64_t)> & on_progress) {
                std::vector<ScoreItem> items;
                items.reserve(pairs.size());
                for (const auto & [prompt, response] : pairs) {
                    items.push_back({prompt, response});
                }
                std::vector<ScoreResult> results;
                {
                    py::gil_scoped_release release;
                    results = self.score(items, per_token, [&](int64_t tokens) {
                        check_signals();
                        if (on_progress) {
                            py::gil_scoped_acquire gil;
                            on_progress(tokens);
                        }
                    });
                }
                py::list out;
                for (auto & r : results) {
                    out.append(py::make_tuple(r.logprob, to_numpy(std::move(r.token_logprobs))));
                }
                return out;
            },
            py::arg("items"), py::arg("per_token") = false, py::arg("on_progress") = nullptr)
        .def_property_readonly("stats", [](const Scorer & self) {
            const ScoreStats & s = self.stats();
            py::dict d;
            d["evaluated_tokens"] = s.evaluated_tokens;
            d["naive_tokens"] = s.naive_tokens;
            d["decode_calls"] = s.decode_calls;
            return d;
        });

    py::class_<SamplingParams>(m, "SamplingParams")
        .def(py::init<>())
        .def_readwrite("temperature", &SamplingParams::temperature)
        .def_readwrite("top_k", &SamplingParams::top_k)
        .def_readwrite("top_p", &SamplingParams::top_p)
        .def_readwrite("min_p", &SamplingParams::min_p)
        .def_readwrite("seed", &SamplingParams::seed)
        .def_readwrite("max_tokens", &SamplingParams::max_tokens)
        .def_readwrite("stop", &SamplingParams::stop)
        .def_readwrite("repeat_penalty", &SamplingParams::repeat_penalty)
        .def_readwrite("frequency_penalty", &SamplingParams::frequency_penalty)
        .def_readwrite("presence_penalty", &SamplingParams::presence_penalty)
        .def_readwrite("penalty_last_n", &SamplingParams::penalty_last_n)
        .def_readwrite("dry_multiplier", &SamplingParams::dry_multiplier)
        .def_readwrite("dry_base", &SamplingParams::dry_base)
        .def_readwrite("dry_allowed_length", &SamplingParams::dry_allowed_length)
        .def_readwrite("dry_penalty_last_n", &SamplingParams::dry_penalty_last_n)
        .def_readwrite("entropy_stats", &SamplingParams::entropy_stats)
        .def_readwrite("logit_bias", &SamplingParams::logit_bias)
        .def_readwrite("grammar", &SamplingParams::grammar);

    py::class_<Steering>(m, "Steering")
        .def(py::init<>())
        .def_readwrite("coefficients", &Steering::coefficients)
        .def_readwrite("token_bias", &Steering::token_bias)
        .def_readwrite("eog_bias", &Steering::eog_bias)
        .def_readwrite("plausibility", &Steering::plausibility)
        .def_readwrite("max_kl", &Steering::max_kl)
        .def_readwrite("length_target", &Steering::length_target)
        .def_readwrite("length_rate", &Steering::length_rate);

    py::class_<Engine>(m, "Engine")
        .def(py::init([](const std::vector<const Model *> & models, const std::vector<SlotLayout> & slots, int n_ctx,
                         int n_batch, int n_threads) {
                 EngineParams params;
                 params.n_ctx = n_ctx;
                 params.n_batch = n_batch;
                 params.n_threads = n_threads;
                 return new Engine(models, slots, params);
             }),
             py::arg("models"), py::arg("slots"), py::arg("n_ctx"), py::arg("n_batch"), py::arg("n_threads"),
             py::keep_alive<1, 2>())  // the list of models lives as long as the engine
        .def_property_readonly("n_slots", &Engine::n_slots)
        .def("sync", &Engine::sync, py::arg("slot"), py::arg("prompts"), py::call_guard<py::gil_scoped_release>())
        .def("forget", &Engine::forget, py::arg("slot"))
        .def(
            "generate",
            [](Engine & self, const std::vector<int> & slots, const std::vector<Steering> & steering,
               const std::vector<SamplingParams> & sampling, const std::function<py::object(int, py::str)> & on_piece) {
                std::vector<GenerationResult> results;
                bool signalled = false;
                {
                    py::gil_scoped_release release;
                    results = self.generate(slots, steering, sampling, [&](int slot, const std::string & piece) {
                        py::gil_scoped_acquire gil;
                        if (PyErr_CheckSignals() != 0) {
                            signalled = true;  // raised again below, once the engine has stopped cleanly
                            return false;
                        }
                        // The callback returns False to stop its slot (None or anything else goes on).
                        return !on_piece || !on_piece(slot, utf8(piece)).is(py::bool_(false));
                    });
                }
                if (signalled) {
                    throw py::error_already_set();
                }
                py::list out;
                for (const auto & r : results) {
                    py::dict d;
                    d["text"] = utf8(r.text);
                    d["tokens"] = r.tokens;
                    d["finish_reason"] = r.finish_reason;
                    d["seconds"] = r.seconds;
                    d["entropy_plain_bits"] = r.entropy_plain_bits;
                    d["entropy_fused_bits"] = r.entropy_fused_bits;
                    out.append(d);
                }
                return out;
            },
            py::arg("slots"), py::arg("steering"), py::arg("sampling"), py::arg("on_piece") = nullptr)
        .def("logits", [](const Engine & self, int slot, int sequence) { return to_numpy(self.logits(slot, sequence)); },
             py::arg("slot"), py::arg("sequence"))
        .def("fused_logits", [](const Engine & self, int slot, const Steering & steering, const std::string & answer) {
            return to_numpy(self.fused_logits(slot, steering, answer));
        }, py::arg("slot"), py::arg("steering"), py::arg("answer") = "")
        .def("plausible", &Engine::plausible, py::arg("slot"), py::arg("steering"))
        .def("raw_steps", &Engine::raw_steps, py::arg("n"), py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("kv_bytes", &Engine::kv_bytes);
}
