from config import GSASRecExperimentConfig
config = GSASRecExperimentConfig(
    dataset_name='latest_small',
    sequence_length=50,
    embedding_dim=64,
    num_heads=2,
    num_blocks=2,
    dropout_rate=0.1,
    negs_per_pos=256,
    gbce_t=0.75,
    train_batch_size=128,
    early_stopping_patience=60,
    max_epochs=170,
    max_batches_per_epoch=100,
    reuse_item_embeddings=True,
)
