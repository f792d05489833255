// Decoding toward the lengths a person chose (issue 25): an end-of-generation hazard around a target
// length, in the units of the per-user model's length feature (words, per e-fold).
#pragma once

#include "llama.h"

#include <string>
#include <vector>

namespace drift {

// Words as the per-user model counts them (fit/features.py's term_counts): runs of ASCII letters and
// digits, an apostrophe and letters after one belonging to it ("don't" is one word).
int count_words(const std::string & text);

// Whether an answer may stop here without cutting a sentence: it ends (closing quotes and brackets
// aside) with '.', '!' or '?' not after a digit ("1." opens a list item), or with a line break after a
// line that does not end in ':' or ','.
bool at_sentence_end(const std::string & text);

// The hazard on the fused logits of a step after `answer`. n = count_words(answer), T = target, r = rate:
//  r < 0 (a taste for longer answers): while n < T, every end-of-generation token gets r * ln((1+T)/(1+n)),
//        i.e. -|r| per e-fold still to go;
//  r > 0 (a taste for shorter answers): past T and only at a sentence end, the most likely end-of-generation
//        token is raised so that its probability under the fused logits is at least
//        q = 1 - ((1+T)/(1+n))^r: the answer outlives each e-fold past T with probability e^-r.
// Returns the token raised (-1: none); the caller admits it past the plausibility guard, since the LLM
// itself has just ended a sentence. target <= 0 or rate == 0: nothing.
llama_token length_hazard(float * fused, int n_vocab, const std::vector<llama_token> & eog, float target,
                          float rate, const std::string & answer);

}  // namespace drift
