"""`tiny-planted`: an SAE for `tiny-random` with a planted right answer, for optimizer tests and the
seconds-long example experiment. Steering one feature makes the model write " wait", and one
reasoning feature fires exactly on that word.

Feature `PUSH`'s decoder direction is the unembedding of " wait", so adding it at the SAE's layer
makes greedy decoding emit " wait"; feature `DETECT`'s encoder reads the layer-2 residual direction
that " wait" tokens carry, with a bias that keeps it silent on other tokens. The activation is read
before steering is added, so the optimizer can raise it only by changing what the model writes,
as in the paper.
"""

from __future__ import annotations

import torch

from reasoning_dspy.sae import SAE, SAEConfig

#: The SAE's name wherever an SAE name is taken (experiment configs).
NAME = "tiny-planted"
PUSH, DETECT, D_SAE, LAYER = 5, 9, 16, 2
#: Candidate steering features, best first: PUSH is second, so only trials steering two or more find it.
CANDIDATES = [3, PUSH, 11]
#: The reasoning features whose activation is the metric.
REASONING = [DETECT]

_CONTEXTS = ["so wait I think", "the cat wait for it", "wait what is this", "numbers add up wait no",
             "hello world and more words here", "one two three four"]


def planted_sae(model, tokenizer) -> SAE:
    """Build the SAE for `model` (tiny-random); deterministic."""
    wait = tokenizer(" wait", add_special_tokens=False).input_ids[0]
    hidden, is_wait = [], []
    for text in _CONTEXTS:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden.append(model(ids, output_hidden_states=True).hidden_states[LAYER + 1][0])
        is_wait.append(ids[0] == wait)
    h, mask = torch.cat(hidden), torch.cat(is_wait)
    direction = h[mask].mean(0) - h[~mask].mean(0)
    direction /= direction.norm()
    proj = h @ direction
    threshold = float(proj[mask].min() + proj[~mask].max()) / 2
    sae = SAE.from_config(SAEConfig(architecture="relu", d_in=h.shape[1], d_sae=D_SAE, hook_layer=LAYER,
                                    model_name="tiny-random"))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        basis, _ = torch.linalg.qr(torch.randn(h.shape[1], h.shape[1]))
        sae.W_dec.copy_(basis[:D_SAE])
        sae.W_dec[PUSH] = model.lm_head.weight[wait] / model.lm_head.weight[wait].norm()
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, DETECT] = direction
        sae.b_enc[DETECT] = -threshold
    return sae
