"""fedinv.agents: learned ordering agents -- Gymnasium/PettingZoo environments over the
simulator, the Demand Predictor (forecaster), double DQN with parameter sharing, its
checkpoints, and train-and-compare against tuned classical policies (``fedinv train``).
Imports torch; never Flower."""
