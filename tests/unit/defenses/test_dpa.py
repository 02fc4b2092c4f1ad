"""Deep Partition Aggregation (defenses.dpa): the content hash, base models that see
their own partition only, and the certificate."""

import torch

from backdoor_utils.defenses.dpa import (
    DPA,
    certificates,
    content_ids,
    certified_accuracy,
    median_certified,
    partition_of,
    vote_counts,
)


def test_the_partition_is_the_pixel_sum_modulo_k_whatever_the_images_order():
    x = torch.zeros(3, 1, 28, 28)
    x[0, 0, 0, 0] = 1.0  # 255
    x[1, 0, 0, :2] = 10 / 255  # 20
    x[2, 0, 5, 5] = 7 / 255  # 7
    assert partition_of(x, 10).tolist() == [5, 0, 7]
    assert partition_of(x.flip(0), 10).tolist() == [7, 0, 5]  # by content, not index


def test_the_certificate_counts_a_vote_moved_as_two_and_ties_go_to_the_smaller_label():
    votes = torch.zeros(4, 10, dtype=torch.long)
    votes[0, 3], votes[0, 5] = (
        10,
        4,
    )  # gap 6: three moved votes make a tie 7-7, won by 3
    votes[1, 5], votes[1, 3] = 10, 4  # gap 6, but label 3 wins a tie: two moves only
    votes[2, 2], votes[2, 7] = 5, 5  # a tie: label 2, certified for nothing
    votes[3, 7], votes[3, 2] = 5, 5  # the same counts with label 2 smaller still
    predicted, radius = certificates(votes)
    assert predicted.tolist() == [3, 5, 2, 2]
    assert radius.tolist() == [3, 2, 0, 0]
    y = torch.tensor([3, 5, 2, 7])
    assert certified_accuracy(predicted, radius, y, [0, 2, 3]) == [0.75, 0.5, 0.25]
    assert median_certified(predicted, radius, y) == 2  # two of four hold at 2


def test_a_base_model_sees_its_own_partition_only(splits):
    dpa = DPA(k=7, epochs=3, nominal_size=20, batch_size=8)
    x, y = splits.x_train[:300], splits.y_train[:300]
    parts = partition_of(x, 7)
    table, active = dpa._schedule(parts, content_ids(x), 0)
    assert active.all() and table.shape == (7, dpa.steps * 8)
    for i in range(7):
        assert (parts[table[i]] == i).all()
    # insert one image into partition 0: no other model's schedule or training moves
    extra = torch.zeros(1, 1, 28, 28)
    extra[0, 0, 14, 14] = 7 / 255  # pixel sum 7: partition 0
    assert int(partition_of(extra, 7)) == 0
    x2, y2 = torch.cat([x, extra]), torch.cat([y, torch.tensor([9])])
    model, _ = dpa.train(x, y, seed=0)
    poisoned, _ = dpa.train(x2, y2, seed=0)
    for name, value in model.named_parameters():
        after = dict(poisoned.named_parameters())[name]
        assert torch.equal(value[1:], after[1:]), name  # models 1..6 unchanged
        assert not torch.equal(value[0], after[0]), name  # model 0 saw the image


def test_votes_come_from_the_models_with_data_and_the_ensemble_learns(splits):
    dpa = DPA(k=5, epochs=8, nominal_size=400, batch_size=32, hidden=32)
    model, active = dpa.train(splits.x_train, splits.y_train, seed=0)
    votes = vote_counts(model, active, splits.x_test[:500])
    assert votes.shape == (500, 10) and (votes.sum(1) == 5).all()
    predicted, _ = certificates(votes)
    assert float((predicted == splits.y_test[:500]).float().mean()) > 0.7
    active[0] = False  # an empty partition abstains
    assert (vote_counts(model, active, splits.x_test[:5]).sum(1) == 4).all()


def test_each_training_image_is_shifted_by_its_own_seeded_offset():
    from torch.nn.functional import pad

    from backdoor_utils.defenses.dpa import shifted

    x = torch.arange(5 * 28 * 28, dtype=torch.float).view(5, 28, 28)
    padded = pad(x, (2, 2, 2, 2))
    batch = torch.tensor([[4, 0, 2], [1, 1, 3]])
    out = shifted(padded, batch, 2, seed=5)
    assert out.shape == (2, 3, 28, 28)
    offsets = set()
    for a in range(2):
        for b in range(3):
            image = padded[batch[a, b]]
            offsets |= {
                (dy, dx)
                for dy in range(5)
                for dx in range(5)
                if torch.equal(out[a, b], image[dy : dy + 28, dx : dx + 28])
            }
    assert len(offsets) > 1  # not one shift for the whole batch
    assert torch.equal(shifted(padded, batch, 2, seed=5), out)  # the seed decides
    assert torch.equal(shifted(x, batch, 0, seed=5), x[batch])


def test_each_partition_count_gets_its_own_ensemble_and_the_papers_row_where_known(
    splits, tmp_path, monkeypatch
):
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration.certified import (
        PAPER_MNIST,
        partition_counts,
        partition_counts_text,
    )

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    x, y = splits.x_train[:300], splits.y_train[:300]
    dpa = DPA(k=3, epochs=2, hidden=8, batch_size=8)
    table = partition_counts(
        x, y, splits.x_test[:50], splits.y_test[:50], dpa, [3, 1200]
    )
    assert list(table.k) == [3, 1200]
    # a partition's nominal size follows k: 300 images / 3 and / 1,200 (at least one)
    assert list(table["images a partition"]) == [100, 1]
    assert table["paper: clean accuracy"].isna().tolist() == [True, False]
    assert table.loc[1, "paper: median certified"] == PAPER_MNIST[1200][1]
    assert table["clean accuracy"].between(0, 1).all()
    assert (table["seconds to train"] > 0).all()
    text = partition_counts_text(table)
    assert text.startswith("at k = 3 (about 100 images a partition) clean accuracy")
    assert text.endswith("(the paper: 0.9581 and 448)") and text.count("paper") == 1
