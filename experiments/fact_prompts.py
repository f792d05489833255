"""Factual prompts and the words a correct answer must contain (issue 19, "facts kept").

Written down before any generation was run with them, and committed on their own, so that the
history shows the lists were not fitted to what the models answer.

Each prompt has one or more groups; a group is kept when the answer contains any of its
alternatives. An alternative is one or more stems matched against the answer's words (lower case,
runs of letters and digits; "H2O" is one word, "100°C" two):
  * a stem matches a word that starts with it ("scatter" matches "scattering", "scattered");
  * a stem ending in '$' matches that word exactly ("sun$" matches "sun", not "sunday");
  * a multi-word alternative ("carbon dioxide") matches those words in a row.
No required stem occurs in its own prompt, so an answer that parrots the prompt keeps nothing.

The split is fixed here: odd indices are held out (20 prompts, among them the demo's two
questions), even indices are for training (choosing settings). Nothing may be chosen on the
held-out half.
"""

from __future__ import annotations

# (prompt, groups): every group is a tuple of alternatives, any of which keeps it.
FACTS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("What is the capital of France?", (("paris",),)),                                           # 0
    ("How do I boil an egg?", (("water",), ("minute", "heat", "pot$", "pan$", "pans$", "stove",  # 1
                                             "simmer", "saucepan"))),
    ("What gas do plants take in from the air?", (("carbon dioxide", "co2$"),)),                 # 2
    ("Why is the sky blue?", (("scatter",), ("light", "sunlight", "wavelength"))),               # 3
    ("Who wrote Romeo and Juliet?", (("shakespeare",),)),                                        # 4
    ("What is the largest planet in our solar system?", (("jupiter",),)),                        # 5
    ("How many legs does a spider have?", (("eight$", "8$"),)),                                  # 6
    ("What is the capital of Japan?", (("tokyo",),)),                                            # 7
    ("What is the chemical formula for water?", (("h2o$",),)),                                   # 8
    ("What causes the tides?", (("moon",), ("gravit",))),                                        # 9
    ("What do bees make from nectar?", (("honey",),)),                                           # 10
    ("Which planet is known as the Red Planet?", (("mars$",),)),                                 # 11
    ("What is the freezing point of water in degrees Celsius?", (("0$", "zero$"),)),             # 12
    ("Who painted the Mona Lisa?", (("leonardo", "vinci$"),)),                                   # 13
    ("What is the largest ocean on Earth?", (("pacific",),)),                                    # 14
    ("How many continents are there on Earth?", (("seven$", "7$"),)),                            # 15
    ("What is the capital of Italy?", (("rome$",),)),                                            # 16
    ("What do caterpillars turn into?", (("butterfl", "moth$", "moths$"),)),                     # 17
    ("What is the tallest mountain in the world?", (("everest",),)),                             # 18
    ("What organ pumps blood around the body?", (("heart",),)),                                  # 19
    ("What is the boiling point of water at sea level?", (("100$", "212$"),)),                   # 20
    ("What is the largest mammal on Earth?", (("whale",),)),                                     # 21
    ("How many days are there in a week?", (("seven$", "7$"),)),                                 # 22
    ("What language is mainly spoken in Brazil?", (("portugu",),)),                              # 23
    ("How do plants make their food?", (("photosynth", "sunlight", "light", "sun$"),            # 24
                                        ("water", "carbon", "co2$"))),
    ("What is the capital of Germany?", (("berlin",),)),                                         # 25
    ("What gas do humans need to breathe to live?", (("oxygen",),)),                             # 26
    ("How many hours are in a day?", (("24$", "twenty four", "twenty-four"),)),                  # 27
    ("How does a compass show direction?", (("magnet",), ("north",))),                           # 28
    ("What is the hardest natural material?", (("diamond",),)),                                  # 29
    ("How do I make ice cubes at home?", (("water",), ("freez",))),                              # 30
    ("Why do we have day and night?", (("rotat", "spin", "turns$", "turning$"), ("sun$", "sunlight"))),  # 31
    ("How many sides does a triangle have?", (("three$", "3$"),)),                               # 32
    ("What is the main ingredient of guacamole?", (("avocado",),)),                              # 33
    ("How should I wash my hands properly?", (("soap",), ("water",))),                           # 34
    ("What is the capital of Spain?", (("madrid",),)),                                           # 35
    ("How do I make a cup of tea?", (("water",), ("boil", "hot$", "kettle", "steep"))),          # 36
    ("What is the closest star to Earth?", (("sun$",),)),                                        # 37
    ("Which animal is known as the king of the jungle?", (("lion$", "lions$"),)),                # 38
    ("What do you call a baby cat?", (("kitten",),)),                                            # 39
)
FACT_PROMPTS = tuple(q for q, _ in FACTS)
FACT_GROUPS = dict(FACTS)
FACT_TRAIN = tuple(q for i, (q, _) in enumerate(FACTS) if i % 2 == 0)     # 20, for choosing settings
FACT_HELD_OUT = tuple(q for i, (q, _) in enumerate(FACTS) if i % 2 == 1)  # 20, reported once
