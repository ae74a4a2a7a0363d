//! The rate search: from a start rate, multiply by a factor after every held phase until one
//! fails, then narrow the gap between the last held rate and the failed one by geometric
//! bisection for a few more phases, so the highest held rate is known more finely than one step.

/// Rates are asked to 0.1 message/s.
fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stepping up by the factor.
    Up,
    /// Between the last held rate and the lowest failed one.
    Refine,
}

impl Step {
    pub fn kind(self) -> &'static str {
        match self {
            Step::Up => "search",
            Step::Refine => "refine",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateSearch {
    next: f64,
    factor: f64,
    up_left: usize,
    refine_left: usize,
    held: Option<f64>,
    failed: Option<f64>,
}

impl RateSearch {
    /// `steps` phases stepping up from `from` by `factor`, then up to `refine` bisection phases
    /// once a phase failed.
    pub fn new(from: f64, factor: f64, steps: usize, refine: usize) -> RateSearch {
        RateSearch { next: from, factor, up_left: steps, refine_left: refine, held: None, failed: None }
    }

    /// Most phases this search can run.
    pub fn max_phases(steps: usize, refine: usize) -> usize {
        steps + refine
    }

    /// The next rate to try and which kind of step it is; `None` when the search is over.
    pub fn next(&self) -> Option<(f64, Step)> {
        match self.failed {
            None if self.up_left > 0 => Some((round(self.next), Step::Up)),
            None => None,
            Some(_) if self.refine_left == 0 => None,
            Some(hi) => {
                let lo = self.held.unwrap_or(hi / self.factor);
                let mid = round((lo * hi).sqrt());
                (mid > lo && mid < hi).then_some((mid, Step::Refine))
            }
        }
    }

    /// Records whether the rate [`RateSearch::next`] gave was held.
    pub fn record(&mut self, rate: f64, step: Step, held: bool) {
        match step {
            Step::Up => {
                self.up_left = self.up_left.saturating_sub(1);
                self.next *= self.factor;
            }
            Step::Refine => self.refine_left = self.refine_left.saturating_sub(1),
        }
        if held {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate held so far.
    #[cfg(test)]
    pub fn best(&self) -> Option<f64> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system that holds every rate up to `limit`.
    fn run(mut s: RateSearch, limit: f64) -> (Vec<(f64, Step)>, Option<f64>) {
        let mut asked = Vec::new();
        while let Some((rate, step)) = s.next() {
            asked.push((rate, step));
            s.record(rate, step, rate <= limit);
        }
        (asked, s.best())
    }

    #[test]
    fn steps_up_until_a_failure_then_bisects_between_held_and_failed() {
        let (asked, best) = run(RateSearch::new(100.0, 2.0, 10, 3), 500.0);
        let rates: Vec<f64> = asked.iter().map(|a| a.0).collect();
        // 100, 200, 400 held; 800 failed; then sqrt(400*800)=565.7 fails, sqrt(400*565.7)=475.7
        // holds, sqrt(475.7*565.7)=518.8 fails.
        assert_eq!(rates, vec![100.0, 200.0, 400.0, 800.0, 565.7, 475.7, 518.8]);
        assert_eq!(asked.iter().filter(|a| a.1 == Step::Refine).count(), 3);
        assert_eq!(best, Some(475.7));
    }

    #[test]
    fn without_refinement_or_failure_it_is_the_plain_step_search() {
        let (asked, best) = run(RateSearch::new(10.0, 1.5, 4, 0), 1e9);
        assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![10.0, 15.0, 22.5, 33.8]);
        assert!(asked.iter().all(|a| a.1 == Step::Up));
        assert_eq!(best, Some(33.8));
        let (asked, best) = run(RateSearch::new(10.0, 1.5, 4, 0), 20.0);
        assert_eq!(asked.len(), 3, "stops at the first failure: {asked:?}");
        assert_eq!(best, Some(15.0));
    }

    #[test]
    fn a_first_step_failure_refines_below_it_and_the_gap_closing_ends_early() {
        let (asked, best) = run(RateSearch::new(100.0, 2.0, 5, 2), 80.0);
        // 100 fails; lower bound 50: sqrt(50*100)=70.7 holds; sqrt(70.7*100)=84.1 fails.
        assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![100.0, 70.7, 84.1]);
        assert_eq!(best, Some(70.7));
        // A gap narrower than the rounding ends the refinement.
        let mut s = RateSearch::new(1.0, 1.05, 5, 9);
        s.record(1.0, Step::Up, true);
        s.record(1.1, Step::Up, false);
        assert_eq!(s.next(), None, "1.0 and 1.1 have no 0.1-rounded rate between them");
    }
}
