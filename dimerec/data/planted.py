"""The `planted` world: a synthetic dataset whose users' interests are known.

`make_planted(seed)` builds a small world of users who hold a few latent
interests (categories), let those interests drift over time, and click items
drawn from them. Everything is decided by `numpy.random.default_rng(seed)`:
the same seed and arguments give the same world, byte for byte.

Generative process
------------------
World (drawn once per seed):

1. **Categories.** `n_categories` friendly names ("Jazz", "Astronomy", ...) are
   drawn from a fixed pool; when more are asked for than the pool holds, the
   pool is reused with a number appended ("Jazz 2").
2. **Items.** Each category owns `items_per_category` items, so
   `n_items = n_categories * items_per_category`. Item ids are shuffled, so a
   category's items are not contiguous. Inside a category the items sit on a
   ring (their *chain order*, local index 0 .. m-1), which defines each item's
   "neighbours": the next one (j+1) and the one after (j+2), wrapping around.
3. **Within-category popularity.** Each category gives its items Zipf weights
   `1 / rank**zipf_exponent`, with the ranks assigned by a random permutation,
   so popularity is unrelated to chain order.
4. **Category prior.** Categories are not equally liked: a category's chance to
   become someone's interest is proportional to `1 / rank**category_skew` for a
   random ranking of the categories.
5. **Titles.** Every item gets a unique title "<Category> · <Adjective> <Noun>"
   (e.g. "Jazz · Blue Lantern"); the adjective/noun pairs are a seeded draw
   without replacement from fixed word lists, so titles are unique across the
   whole world, not only within a category.

Users (drawn for every user, all users advanced together, one step at a time):

6. **Length.** `round(triangular(min_len, mode_len, max_len_seq))`: 15..60 with
   mean about 35 by default.
7. **Interests.** A user holds `k` interests, `k` uniform in
   `[min_interests, max_interests]` (2..4), distinct categories drawn from the
   category prior, with weights from a symmetric Dirichlet(`weight_alpha`).
   Interests live in fixed *slots* 0..k-1 (slots k..max_interests-1 stay empty).
8. **Drift.** Before every step except the first, with probability `p_drift`
   one slot (uniform over the user's k slots) is handed to a new category that
   the user does not hold, drawn from the category prior. The new interest keeps
   the slot's weight and starts with no chain memory (see 10).
9. **Noise.** With probability `p_noise` the step is noise: a uniform item over
   the whole catalogue (never the previous item). Noise does not touch the
   user's chain memory. Its emitting interest is recorded as -1.
10. **Interest step.** Otherwise a slot is chosen with probability equal to its
    weight; its category `c` emits the item:
    - if the user has clicked an item of `c` before (chain memory: the chain
      position `j` of the last item `c` emitted for this user) then with
      probability `p_chain` the item is a neighbour: `j+1` with probability
      `p_next`, else `j+2` (mod m);
    - otherwise (no memory, or not chained) an item of `c` drawn from the
      within-category Zipf popularity; if that equals the previous item, its
      chain successor is taken instead (no immediate repeats).
    The chain memory of `c` becomes the emitted item's chain position.

So the next item depends on (a) which interests the user holds now (visible in
the category mix of recent items, and drifting), (b) each category's item
popularity, and (c) a local sequential pattern inside every interest. A
popularity ranker only sees (b) and the category prior; the interest mix gives
a large gain; the chain pattern is what a sequence model can add on top.

Defaults (2,000 users, 12 x 40 = 480 items, ~70k interactions, mean length
~35) generate in about 0.03 s. See `PlantedParams` for every knob.

Difficulty at the defaults (seeds 0/1/2; next-item HR@50 over every prefix of
200 test users of `split(0)`, popularity counted on the training users):

    popularity                                          0.23 / 0.21 / 0.21
    category mix of the last 10 items x item popularity 0.65 / 0.62 / 0.63
    oracle: true current interest weights x item pop.   0.71 / 0.69 / 0.70
    oracle + true chain rule (+1/+2 neighbours)         0.83 / 0.82 / 0.83

About 63% of users see at least one drift; 5% of steps are noise; about 42% of
steps are chain neighbours.

Ground truth (`SeqDataset.ground_truth`, plain Python and numpy)
----------------------------------------------------------------
- `item_category`: int64 [n_items], category index of each item (into
  `category_names`); `item_categories[i] == [category_names[item_category[i]]]`.
- `category_names`: list[str], name of each category index.
- `item_chain_pos`: int64 [n_items], each item's chain position inside its
  category (0 .. m-1); its neighbours are at +1 and +2 (mod m).
- `item_pop`: float64 [n_items], the item's within-category Zipf probability
  (sums to 1 over each category's items).
- `category_prior`: float64 [n_categories], probability weights used to draw
  interests (sums to 1).
- `user_interests`: list (per user) of int64 [len(seq), max_interests]: the
  categories held in each slot when step t was emitted (after that step's
  drift), -1 for empty slots. The emitting interest of step t is among row t.
- `interest_weights`: list (per user) of float64 [len(seq), max_interests]:
  the weight of each slot, aligned with `user_interests` (0 for empty slots;
  each row sums to 1).
- `emitting_interest`: list (per user) of int64 [len(seq)]: the category that
  emitted step t, or -1 for a noise step. For non-noise steps it equals
  `item_category[seq[t]]`.
- `emitting_slot`: list (per user) of int64 [len(seq)]: the slot that emitted
  step t, -1 for noise.
- `chained`: list (per user) of bool [len(seq)]: True where the item was a
  chain neighbour (+1/+2) of the category's previous item for this user.
- `params`: dict, every generation parameter (including `seed`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dimerec.data.dataset import SeqDataset

CATEGORY_POOL = (
    "Jazz", "Astronomy", "Cooking", "Hiking", "Chess", "Film Noir", "Gardening",
    "Poetry", "Photography", "Robotics", "Sailing", "Pottery", "Opera",
    "Birdwatching", "Cycling", "Origami", "Mythology", "Baking", "Knitting",
    "Volcanoes", "Comics", "Yoga", "Archaeology", "Tea", "Calligraphy",
    "Board Games", "Beekeeping", "Surfing", "Magic Tricks", "Typography",
)

ADJECTIVES = (
    "Blue", "Silent", "Golden", "Hidden", "Crimson", "Velvet", "Quiet", "Wild",
    "Northern", "Paper", "Copper", "Midnight", "Silver", "Little", "Ancient",
    "Bright", "Hollow", "Lucky", "Secret", "Amber", "Frozen", "Gentle", "Iron",
    "Lonely", "Misty", "Painted", "Restless", "Scarlet", "Shining", "Sleepy",
    "Stormy", "Sunny", "Tiny", "Wandering", "Winter", "Electric", "Emerald",
    "Faded", "Glass", "Honest", "Jade", "Lunar", "Marble", "Olive", "Rusty",
    "Salty", "Twilight", "Violet",
)

NOUNS = (
    "Lantern", "Harbor", "Comet", "Garden", "Bishop", "Shadow", "Kettle",
    "River", "Meadow", "Compass", "Falcon", "Orchard", "Anchor", "Window",
    "Sparrow", "Bridge", "Canyon", "Feather", "Island", "Journey", "Ladder",
    "Mirror", "Needle", "Pebble", "Quill", "Ribbon", "Saddle", "Thimble",
    "Valley", "Whistle", "Beacon", "Cellar", "Engine", "Forest", "Glacier",
    "Hammock", "Lighthouse", "Mountain", "Nebula", "Pocket", "Riddle",
    "Summit", "Teacup", "Tower", "Voyage", "Willow", "Atlas", "Drum",
)


@dataclass(frozen=True)
class PlantedParams:
    """Every knob of the planted world (see the module docstring for their roles)."""

    seed: int = 0
    n_users: int = 2000
    n_categories: int = 12
    items_per_category: int = 40
    max_len: int = 20  # SeqDataset.max_len: histories are truncated to this
    min_len: int = 15  # sequence lengths: round(triangular(min_len, mode_len, max_len_seq))
    mode_len: int = 30
    max_len_seq: int = 60
    min_interests: int = 2
    max_interests: int = 4
    weight_alpha: float = 1.0  # Dirichlet concentration of the interest weights
    category_skew: float = 0.3  # category prior ~ 1 / rank**category_skew
    zipf_exponent: float = 0.6  # within-category popularity ~ 1 / rank**zipf_exponent
    p_drift: float = 0.03  # per step: one interest replaced by a new category
    p_noise: float = 0.05  # per step: a uniform item, emitting interest -1
    p_chain: float = 0.5  # after an item of c, next item of c is a chain neighbour
    p_next: float = 0.7  # given a neighbour: +1 (else +2)


def _validate(p: PlantedParams) -> None:
    if p.n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {p.n_users}")
    if p.items_per_category < 3:
        raise ValueError(f"items_per_category must be >= 3, got {p.items_per_category}")
    if not 1 <= p.min_interests <= p.max_interests:
        raise ValueError(f"need 1 <= min_interests <= max_interests, got {p.min_interests}, {p.max_interests}")
    if p.n_categories <= p.max_interests:
        raise ValueError(f"n_categories ({p.n_categories}) must exceed max_interests ({p.max_interests}) "
                         "so that interests can drift to a new category")
    if not 1 <= p.min_len <= p.mode_len <= p.max_len_seq or p.min_len == p.max_len_seq:
        raise ValueError(f"need 1 <= min_len <= mode_len <= max_len_seq with min_len < max_len_seq, "
                         f"got {p.min_len}, {p.mode_len}, {p.max_len_seq}")
    if p.max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {p.max_len}")
    for name in ("p_drift", "p_noise", "p_chain", "p_next"):
        v = getattr(p, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if p.weight_alpha <= 0:
        raise ValueError(f"weight_alpha must be > 0, got {p.weight_alpha}")


def _category_names(rng: np.random.Generator, n: int) -> list[str]:
    pool = len(CATEGORY_POOL)
    order = rng.permutation(pool)
    names = []
    for i in range(n):
        base = CATEGORY_POOL[order[i % pool]]
        names.append(base if i < pool else f"{base} {i // pool + 1}")
    return names


def _item_words(rng: np.random.Generator, n: int) -> list[str]:
    """n unique "<Adjective> <Noun>" strings (numbered once the pairs run out)."""
    n_pairs = len(ADJECTIVES) * len(NOUNS)
    words = []
    for rnd in range(-(-n // n_pairs)):
        order = rng.permutation(n_pairs)
        for k in order[: min(n_pairs, n - rnd * n_pairs)]:
            w = f"{ADJECTIVES[k // len(NOUNS)]} {NOUNS[k % len(NOUNS)]}"
            words.append(w if rnd == 0 else f"{w} {rnd + 1}")
    return words


def _gumbel_pick(rng: np.random.Generator, log_prior: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """One category per row, drawn from the prior, never one marked in `excluded` [R, C]."""
    scores = log_prior[None, :] + rng.gumbel(size=excluded.shape)
    scores[excluded] = -np.inf
    return scores.argmax(axis=1)


@dataclass
class _World:
    """What is drawn once per seed (steps 1-5 of the module docstring)."""

    names: list[str]  # category names
    local_to_item: np.ndarray  # [C, m]: the item id of (category c, chain position j)
    item_category: np.ndarray  # [n_items]
    item_chain_pos: np.ndarray  # [n_items]
    item_pop: np.ndarray  # [n_items]: within-category Zipf probability
    pop_cdf: np.ndarray  # [C, m]: cumulative within-category popularity over chain positions
    category_prior: np.ndarray  # [C]
    log_prior: np.ndarray  # [C]
    titles: list[str]

    @property
    def n_items(self) -> int:
        return self.local_to_item.size


def _draw_item_rings(rng: np.random.Generator, C: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2: shuffled item ids laid on one ring per category; (local_to_item, item_category, item_chain_pos)."""
    n_items = C * m
    local_to_item = rng.permutation(n_items).reshape(C, m)
    item_category = np.empty(n_items, dtype=np.int64)
    item_chain_pos = np.empty(n_items, dtype=np.int64)
    item_category[local_to_item] = np.arange(C)[:, None]
    item_chain_pos[local_to_item] = np.arange(m)[None, :]
    return local_to_item, item_category, item_chain_pos


def _draw_popularity(rng: np.random.Generator, zipf_exponent: float, C: int, m: int) -> np.ndarray:
    """Step 3: [C, m] within-category Zipf probabilities over chain positions, ranked at random."""
    zipf = 1.0 / np.arange(1, m + 1) ** zipf_exponent
    zipf /= zipf.sum()
    ranks = np.argsort(rng.random((C, m)), axis=1)  # rank of each chain position
    return zipf[ranks]


def _draw_category_prior(rng: np.random.Generator, C: int, category_skew: float) -> np.ndarray:
    """Step 4: [C] probability of each category becoming an interest, 1 / rank**category_skew."""
    cat_rank = rng.permutation(C)
    category_prior = 1.0 / (cat_rank + 1.0) ** category_skew
    category_prior /= category_prior.sum()
    return category_prior


def _draw_world(rng: np.random.Generator, p: PlantedParams) -> _World:
    """Steps 1-5, in this order of draws: names, item rings, popularity, category prior, titles."""
    C, m = p.n_categories, p.items_per_category
    names = _category_names(rng, C)
    local_to_item, item_category, item_chain_pos = _draw_item_rings(rng, C, m)
    pop_local = _draw_popularity(rng, p.zipf_exponent, C, m)
    pop_cdf = np.cumsum(pop_local, axis=1)
    pop_cdf[:, -1] = 1.0
    item_pop = np.empty(C * m)
    item_pop[local_to_item] = pop_local
    category_prior = _draw_category_prior(rng, C, p.category_skew)
    words = _item_words(rng, C * m)
    titles = [f"{names[item_category[i]]} · {words[i]}" for i in range(C * m)]
    return _World(names=names, local_to_item=local_to_item, item_category=item_category,
                  item_chain_pos=item_chain_pos, item_pop=item_pop, pop_cdf=pop_cdf,
                  category_prior=category_prior, log_prior=np.log(category_prior), titles=titles)


@dataclass
class _Users:
    """Every user's state, all users advanced together one step at a time (steps 6-10)."""

    lengths: np.ndarray  # [U] sequence lengths
    k: np.ndarray  # [U] number of interests (slots 0..k-1 in use)
    interests: np.ndarray  # [U, K] category held in each slot, -1 for empty slots
    held: np.ndarray  # [U, C] bool: the user holds category c
    weights: np.ndarray  # [U, K] slot weights, 0 for empty slots
    memory: np.ndarray  # [U, C] chain position of c's last item, per user; -1 for none
    prev: np.ndarray  # [U] the previous item, -1 before the first


def _draw_users(rng: np.random.Generator, p: PlantedParams, log_prior: np.ndarray) -> _Users:
    """Steps 6-7: every user's length, interests (one slot at a time) and interest weights."""
    U, K, C = p.n_users, p.max_interests, p.n_categories
    lengths = np.rint(rng.triangular(p.min_len, p.mode_len, p.max_len_seq, size=U)).astype(np.int64)
    k = rng.integers(p.min_interests, p.max_interests + 1, size=U)
    slot_used = np.arange(K)[None, :] < k[:, None]  # [U, K]

    interests = np.full((U, K), -1, dtype=np.int64)
    held = np.zeros((U, C), dtype=bool)
    for s in range(K):
        rows = np.flatnonzero(slot_used[:, s])
        pick = _gumbel_pick(rng, log_prior, held[rows])
        interests[rows, s] = pick
        held[rows, pick] = True
    weights = rng.gamma(p.weight_alpha, size=(U, K)) * slot_used
    weights /= weights.sum(axis=1, keepdims=True)
    return _Users(lengths=lengths, k=k, interests=interests, held=held, weights=weights,
                  memory=np.full((U, C), -1, dtype=np.int64), prev=np.full(U, -1, dtype=np.int64))


def _drift(rng: np.random.Generator, p: PlantedParams, users: _Users, log_prior: np.ndarray,
           active: np.ndarray) -> None:
    """Step 8, in place: with probability p_drift an active user's random slot goes to a category not held."""
    d = np.flatnonzero(active & (rng.random(len(active)) < p.p_drift))
    if not len(d):
        return
    k = users.k[d]
    slot = np.minimum((rng.random(len(d)) * k).astype(np.int64), k - 1)
    new = _gumbel_pick(rng, log_prior, users.held[d])
    old = users.interests[d, slot]
    users.held[d, old] = False
    users.held[d, new] = True
    users.memory[d, old] = -1
    users.memory[d, new] = -1
    users.interests[d, slot] = new


def _noise_items(rng: np.random.Generator, n_items: int, prev: np.ndarray) -> np.ndarray:
    """Step 9: one uniform item per row over the whole catalogue, never that row's previous item."""
    draw = rng.integers(0, n_items - 1, size=len(prev))
    return draw + ((prev >= 0) & (draw >= prev))


def _interest_items(p: PlantedParams, world: _World, users: _Users, r: np.ndarray,
                    uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 10 for the users `r`, given their uniforms (u_slot, u_chain, u_next, u_pop) [4, len(r)]; updates their
    chain memory in place and returns (item, emitting category, emitting slot, chained)."""
    u_slot, u_chain, u_next, u_pop = uniforms
    m = p.items_per_category
    cw = np.cumsum(users.weights[r], axis=1)
    slot = (cw < u_slot[:, None] * cw[:, -1:]).sum(axis=1)
    slot = np.minimum(slot, users.k[r] - 1)
    c = users.interests[r, slot]
    last = users.memory[r, c]
    is_chain = (last >= 0) & (u_chain < p.p_chain)
    step = np.where(u_next < p.p_next, 1, 2)
    pos_chain = (last + step) % m
    pos_pop = (world.pop_cdf[c] < u_pop[:, None]).sum(axis=1)
    pos_pop = np.minimum(pos_pop, m - 1)
    pos = np.where(is_chain, pos_chain, pos_pop)
    repeat = world.local_to_item[c, pos] == users.prev[r]
    pos = np.where(repeat, (pos + 1) % m, pos)
    users.memory[r, c] = pos
    return world.local_to_item[c, pos], c, slot, is_chain


@dataclass
class _History:
    """What each user saw and why, per step: [U, T] (and [U, T, K]) arrays, cut to each user's length later."""

    seq: np.ndarray
    interests: np.ndarray
    weights: np.ndarray
    emit: np.ndarray
    emit_slot: np.ndarray
    chained: np.ndarray


def _simulate(rng: np.random.Generator, p: PlantedParams, world: _World, users: _Users) -> _History:
    """Steps 8-10 for every step of every user; per step the draws are drift, five uniforms, noise items."""
    U, K, T = p.n_users, p.max_interests, int(users.lengths.max())
    hist = _History(seq=np.full((U, T), -1, dtype=np.int64), interests=np.full((U, T, K), -1, dtype=np.int64),
                    weights=np.zeros((U, T, K)), emit=np.full((U, T), -1, dtype=np.int64),
                    emit_slot=np.full((U, T), -1, dtype=np.int64), chained=np.zeros((U, T), dtype=bool))
    for t in range(T):
        active = t < users.lengths
        if t > 0:
            _drift(rng, p, users, world.log_prior, active)
        hist.interests[:, t] = users.interests
        hist.weights[:, t] = users.weights

        uniforms = rng.random((5, U))
        noise = active & (uniforms[0] < p.p_noise)
        item = np.full(U, -1, dtype=np.int64)
        r = np.flatnonzero(noise)
        if len(r):
            item[r] = _noise_items(rng, world.n_items, users.prev[r])
        r = np.flatnonzero(active & ~noise)
        if len(r):
            item[r], hist.emit[r, t], hist.emit_slot[r, t], hist.chained[r, t] = _interest_items(
                p, world, users, r, uniforms[1:, r])

        hist.seq[active, t] = item[active]
        users.prev = np.where(active, item, users.prev)
    return hist


def _to_dataset(p: PlantedParams, world: _World, lengths: np.ndarray, hist: _History) -> SeqDataset:
    """The world and its histories as a `SeqDataset`, every per-user array cut to the user's length."""
    def per_user(a: np.ndarray) -> list[np.ndarray]:
        return [a[u, : lengths[u]].copy() for u in range(len(lengths))]

    ground_truth = {
        "item_category": world.item_category,
        "category_names": world.names,
        "item_chain_pos": world.item_chain_pos,
        "item_pop": world.item_pop,
        "category_prior": world.category_prior,
        "user_interests": per_user(hist.interests),
        "interest_weights": per_user(hist.weights),
        "emitting_interest": per_user(hist.emit),
        "emitting_slot": per_user(hist.emit_slot),
        "chained": per_user(hist.chained),
        "params": asdict(p),
    }
    return SeqDataset(
        name="planted",
        sequences=per_user(hist.seq),
        n_items=world.n_items,
        max_len=p.max_len,
        titles=world.titles,
        item_categories=[[world.names[c]] for c in world.item_category],
        raw_item_ids=[str(i) for i in range(world.n_items)],
        ground_truth=ground_truth,
        source=f"planted(seed={p.seed})",
    )


def make_planted(seed: int = 0, n_users: int = 2000, n_categories: int = 12,
                 items_per_category: int = 40, **kwargs) -> SeqDataset:
    """The planted-interests world for `seed`; `kwargs` are further `PlantedParams` fields."""
    p = PlantedParams(seed=seed, n_users=n_users, n_categories=n_categories,
                      items_per_category=items_per_category, **kwargs)
    _validate(p)
    rng = np.random.default_rng(seed)
    world = _draw_world(rng, p)
    users = _draw_users(rng, p, world.log_prior)
    hist = _simulate(rng, p, world, users)
    return _to_dataset(p, world, users.lengths, hist)


def next_item_probabilities(data: SeqDataset, user: int, cut: int) -> np.ndarray:
    """The exact probability of every item being `user`'s item at position `cut`, given the planted world's true
    state then (its interests and weights after that step's drift, and each held category's chain memory):
    what an oracle that knows the generator would rank by. [n_items], sums to 1. Steps 9-10 of the docstring:

        P(i) = p_noise · [i ≠ prev] / (n − 1) + (1 − p_noise) · Σ_slots w_s · q_{c_s}(i)
        q_c = p_chain · (p_next · [i = j+1] + (1 − p_next) · [i = j+2]) + (1 − p_chain) · pop_c   (memory j)
        q_c = pop_c                                                                               (no memory)

    with a draw equal to the previous item moved to its chain successor (no immediate repeats)."""
    truth = data.ground_truth
    if truth is None or "item_chain_pos" not in truth:
        raise ValueError(f"{data.name}: next_item_probabilities needs the planted world's ground truth")
    p = truth["params"]
    seq = data.sequences[user]
    if not 0 < cut < len(seq):
        raise ValueError(f"cut must be in 1..{len(seq) - 1} for user {user}, got {cut}")
    n, m = data.n_items, p["items_per_category"]
    item_category, chain_pos, item_pop = truth["item_category"], truth["item_chain_pos"], truth["item_pop"]
    local_to_item = np.empty((p["n_categories"], m), dtype=np.int64)
    local_to_item[item_category, chain_pos] = np.arange(n)
    held, weights = truth["user_interests"][user][cut], truth["interest_weights"][user][cut]
    rows, emitted = truth["user_interests"][user], truth["emitting_interest"][user]
    prev = int(seq[cut - 1])

    probs = np.full(n, p["p_noise"] / (n - 1))
    probs[prev] = 0.0
    for c, w in zip(held, weights):
        if c < 0 or w == 0:
            continue
        since = cut  # the step at which c last became held: its chain memory starts empty there
        while since > 0 and c in rows[since - 1]:
            since -= 1
        emits = [t for t in range(since, cut) if emitted[t] == c]
        q = item_pop[local_to_item[c]].copy()  # [m] over chain positions
        if emits:
            j = chain_pos[seq[emits[-1]]]
            q *= 1 - p["p_chain"]
            q[(j + 1) % m] += p["p_chain"] * p["p_next"]
            q[(j + 2) % m] += p["p_chain"] * (1 - p["p_next"])
        if item_category[prev] == c:  # no immediate repeat: the previous item's mass goes to its successor
            k = chain_pos[prev]
            q[(k + 1) % m] += q[k]
            q[k] = 0.0
        probs[local_to_item[c]] += (1 - p["p_noise"]) * w * q
    return probs
