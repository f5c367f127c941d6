"""gym-pusht's PushT that draws its image observation only on the steps whose observation is read.

gym-pusht draws the 96x96 image on every simulator step (~2.6 ms, most of a
pixel step's cost), while an action chunk of 8 steps keeps only its last
observation. :class:`dsrl.envs.wrappers.ActionChunkWrapper` sets
``skip_observation`` on the steps whose observation it drops; such a step
returns the previous observation instead of drawing one, unless the step
reaches success and ends the episode, whose observation is always drawn.
Rewards, infos and every kept observation are those of gym-pusht's env.
"""

from __future__ import annotations

from typing import Any

from gym_pusht.envs.pusht import PushTEnv


class PushTObservedOnDemand(PushTEnv):
    """PushT whose steps skip drawing the observation while ``skip_observation`` is True (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skip_observation = False
        self._observation: Any = None
        self._coverage = 0.0

    def reset(self, *args: Any, **kwargs: Any):
        self._observation = None
        return super().reset(*args, **kwargs)

    def _get_coverage(self) -> float:
        self._coverage = super()._get_coverage()
        return self._coverage

    def get_obs(self):
        # gym-pusht's step computes the coverage, and terminates above the threshold, just before it observes
        if self._observation is None or not self.skip_observation or self._coverage > self.success_threshold:
            self._observation = super().get_obs()
        return {key: value.copy() for key, value in self._observation.items()}  # a fresh dict, as gym-pusht returns
