"""convjax: hands-on CNNs, Keras-style training callbacks and transfer learning in JAX/Flax.

Modules (pure ones marked *):
    config*        typed experiment configs and `--set` overrides
    models/*       CNN (the course's models), layers, Keras-style summary, backbones
    augment/*      on-device augmentation (ImageDataGenerator semantics)
    optim*         Optax optimizers and schedules
    train_state*   the TrainState pytree
    steps*         train_step / eval_step / predict_step
    sharding*      batch-sharded data parallelism
    data/          sources (tfds, image folders, arrays) and batch sources
    loop           fit / evaluate / predict: the only place with side effects in training
    callbacks/     Keras callbacks
    checkpoint     Orbax save/restore
    train          train_and_evaluate(cfg, workdir)
"""

__version__ = "0.1.0"
