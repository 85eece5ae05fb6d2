"""smollm2-reasoner: SmolLM2 distilled on reflective word-problem traces, with the reflection planted
on purpose (known rates per instruction style, slips that reflection catches), so that ReasonScore,
steering and the optimizers have a known right answer."""
