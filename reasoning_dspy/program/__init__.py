"""What a DSPy user touches: `SteeredLM` (a `dspy.LM` on the steered engine), the lenient chat
adapter, `SAESteeringModule`, the activation metrics, and the word-problem program and scoring that
evaluations share."""
