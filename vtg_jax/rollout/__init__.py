"""Host side of an RL / distillation iteration: prompts, sampled and scored completions, rewards, packing."""
