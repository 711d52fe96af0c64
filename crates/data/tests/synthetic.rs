//! The synthetic log with a planted sequential signal: deterministic for a
//! seed, readable back from CSV and Parquet, and learnable: the planted
//! transitions predict the next item far better than popularity does.

use std::collections::HashMap;

use sasrec_data::synthetic::Transitions;
use sasrec_data::{FilterConfig, IdKind, InputSpec, RawId, build_dataset, read_interactions};

fn events(t: &Transitions) -> Vec<(u32, u32, i64)> {
    let mut out = Vec::new();
    t.generate(|u, i, time| out.push((u, i, time))).unwrap();
    out
}

#[test]
fn same_seed_same_log_and_exact_sizes() {
    let t = Transitions::new(300, 200, 5_000, 7);
    let a = events(&t);
    assert_eq!(a, events(&t));
    assert_ne!(a, events(&Transitions::new(300, 200, 5_000, 8)));
    assert_eq!(a.len(), 5_000);
    let mut per_user = HashMap::new();
    for &(u, i, _) in &a {
        *per_user.entry(u).or_insert(0) += 1;
        assert!(i < 200);
    }
    assert_eq!(per_user.len(), 300);
    assert!(per_user.values().all(|&n| n >= 2));
    assert!(
        Transitions::new(10, 5, 19, 0)
            .generate(|_, _, _| {})
            .is_err(),
        "rows < 2 x users"
    );
}

#[test]
fn planted_transitions_beat_popularity_by_far() {
    let t = Transitions::new(3_000, 2_000, 90_000, 1);
    let all = events(&t);
    // Leave-one-out: count on all but each user's last event, predict the last.
    let mut last_of_user: HashMap<u32, usize> = HashMap::new();
    for (row, &(u, _, _)) in all.iter().enumerate() {
        last_of_user.insert(u, row);
    }
    let mut popularity: HashMap<u32, usize> = HashMap::new();
    let mut next: HashMap<u32, HashMap<u32, usize>> = HashMap::new();
    for (row, w) in all.windows(2).enumerate() {
        let ((u0, i0, _), (u1, i1, _)) = (w[0], w[1]);
        *popularity.entry(i0).or_default() += 1;
        if u0 == u1 && last_of_user[&u1] != row + 1 {
            *next.entry(i0).or_default().entry(i1).or_default() += 1;
        }
    }
    let top10 = |counts: &HashMap<u32, usize>| {
        let mut v: Vec<(u32, usize)> = counts.iter().map(|(&i, &c)| (i, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().take(10).map(|(i, _)| i).collect::<Vec<_>>()
    };
    let popular = top10(&popularity);
    let (mut hit_pop, mut hit_next, mut users) = (0, 0, 0);
    for &row in last_of_user.values() {
        let (_, target, _) = all[row];
        let (_, previous, _) = all[row - 1];
        users += 1;
        hit_pop += usize::from(popular.contains(&target));
        let guess = next.get(&previous).map(top10).unwrap_or_default();
        hit_next += usize::from(guess.contains(&target));
    }
    let (hr_pop, hr_next) = (
        hit_pop as f64 / users as f64,
        hit_next as f64 / users as f64,
    );
    assert!(
        hr_next > 0.5 && hr_next > 2.0 * hr_pop,
        "HR@10: transitions {hr_next:.3}, popularity {hr_pop:.3}"
    );
    // The planted successors are what the counts found.
    let item = all[0].1;
    let planted = t.successors_of(item);
    assert!(next[&item].contains_key(&planted[0]));
}

#[test]
fn written_as_csv_or_parquet_with_either_kind_of_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Transitions::new(50, 40, 1_000, 3);
    let ints = events(&t);
    for string_ids in [false, true] {
        t.string_ids = string_ids;
        let mut datasets = Vec::new();
        for name in ["log.csv", "log.parquet"] {
            let path = dir.path().join(name);
            t.write(&path).unwrap();
            let r = read_interactions(&path, &InputSpec::default()).unwrap();
            assert_eq!(r.len(), 1_000);
            let kind = if string_ids { IdKind::Str } else { IdKind::Int };
            assert_eq!((r.users.kind(), r.items.kind()), (kind, kind), "{name}");
            let first = r.items.get(r.item[0]).unwrap();
            let want = t.item_id(ints[0].1);
            assert_eq!(first.to_string(), want, "{name}");
            assert_eq!(r.time[0], ints[0].2 * 1_000_000);
            if string_ids {
                assert!(matches!(first, RawId::Str(s) if s.len() == 10));
            }
            datasets.push(build_dataset(&r, &FilterConfig::default()).unwrap());
        }
        assert_eq!(datasets[0], datasets[1], "CSV and Parquet give one dataset");
    }
}

#[test]
fn long_range_log_needs_more_than_the_last_item() {
    let t = Transitions::long_range(600, 500, 18_000, 2);
    let all = events(&t);
    assert_eq!(all.len(), 18_000);
    assert_eq!(
        events(&Transitions::new(600, 500, 18_000, 2)).len(),
        18_000,
        "the default setting is unchanged by the new fields"
    );
    let mut users: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(u, i, _) in &all {
        users.entry(u).or_default().push(i);
    }
    // How often item t + 1 is a planted successor of item t + 1 - lag.
    let follows = |items: &[u32], lag: usize, t_next: usize| {
        t_next >= lag
            && t.successors_of(items[t_next - lag])
                .contains(&items[t_next])
    };
    let (mut last_item, mut lag_aware, mut counted) = (0, 0, 0);
    for items in users.values().filter(|items| items.len() >= 8) {
        let last = items.len() - 1;
        // The user's lag, read from their history before the last item.
        let lag = (1..=3)
            .max_by_key(|&lag| (0..last).filter(|&n| follows(items, lag, n)).count())
            .unwrap();
        counted += 1;
        last_item += usize::from(follows(items, 1, last));
        lag_aware += usize::from(follows(items, lag, last));
    }
    assert!(counted > 300, "{counted} users with 8 events");
    let (first_order, with_lag) = (
        last_item as f64 / counted as f64,
        lag_aware as f64 / counted as f64,
    );
    assert!(
        with_lag > 1.8 * first_order && with_lag > 0.4,
        "the last item's successors find {first_order:.3} of the next items, the lag's {with_lag:.3}"
    );
}
