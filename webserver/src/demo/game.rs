//! Tic-tac-toe between two players: the rules (pure, no I/O) and the JSON state that the game
//! page renders from. The player who invited plays X and moves first.
//!
//! Squares are numbered 0 to 8, row by row; messages for people name them by row and column.

use protocol::Name;
use serde::{Deserialize, Serialize};

/// The eight lines that win.
const LINES: [[usize; 3]; 8] = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]];

/// A game id: 32 lowercase hex characters (128 random bits), safe in URLs, facilities and keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GameId(String);

impl GameId {
    pub const LEN: usize = 32;

    pub fn random() -> GameId {
        GameId(crate::random::token()[..Self::LEN].to_owned())
    }

    /// Accepts exactly what [`GameId::random`] produces.
    pub fn parse(text: &str) -> Option<GameId> {
        (text.len() == Self::LEN && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| GameId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The page of the game.
    pub fn url(&self) -> String {
        format!("/game/{}", self.0)
    }

    /// The facility on which the game's players receive its updates (on their user channels).
    pub fn facility(&self) -> protocol::Facility {
        protocol::Facility::parse(&format!("game/{}", self.0)).expect("game facilities are short and plain")
    }
}

impl TryFrom<String> for GameId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        GameId::parse(&value).ok_or_else(|| format!("{value:?} is not a game id"))
    }
}

impl From<GameId> for String {
    fn from(id: GameId) -> String {
        id.0
    }
}

impl std::fmt::Display for GameId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mark {
    X,
    O,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::X => "X",
            Mark::O => "O",
        }
    }

    fn other(self) -> Mark {
        match self {
            Mark::X => Mark::O,
            Mark::O => Mark::X,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Playing,
    Won,
    Draw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub player: Name,
    pub mark: Mark,
    pub square: usize,
}

/// One game as stored in Redis and sent to the pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Game {
    pub id: GameId,
    /// Plays X, moves first.
    pub x: Name,
    pub o: Name,
    pub board: [Option<Mark>; 9],
    pub moves: Vec<Move>,
    pub status: Status,
    pub winner: Option<Name>,
    /// The winning line's squares.
    pub line: Option<[usize; 3]>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Why a move was refused; the text is shown to the player.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("you are not a player of this game")]
    NotAPlayer,
    #[error("the game is over: {0}")]
    GameOver(String),
    #[error("square must be a number from 0 to 8 (row by row); got {0}")]
    NoSuchSquare(i64),
    #[error("it is {0}'s turn, not yours; wait for their move")]
    NotYourTurn(Name),
    #[error("the square in row {row}, column {column} is already taken")]
    Taken { row: usize, column: usize },
}

impl Game {
    pub fn new(id: GameId, x: Name, o: Name, now_ms: u64) -> Game {
        Game {
            id,
            x,
            o,
            board: [None; 9],
            moves: Vec::new(),
            status: Status::Playing,
            winner: None,
            line: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    pub fn mark_of(&self, user: &Name) -> Option<Mark> {
        if *user == self.x {
            Some(Mark::X)
        } else if *user == self.o {
            Some(Mark::O)
        } else {
            None
        }
    }

    pub fn is_player(&self, user: &Name) -> bool {
        self.mark_of(user).is_some()
    }

    pub fn player(&self, mark: Mark) -> &Name {
        match mark {
            Mark::X => &self.x,
            Mark::O => &self.o,
        }
    }

    /// The mark to play next, while the game is on.
    pub fn turn(&self) -> Option<Mark> {
        let mark = match self.moves.len() % 2 {
            0 => Mark::X,
            _ => Mark::O,
        };
        (self.status == Status::Playing).then_some(mark)
    }

    /// Plays `square` for `user`, or says why not. Checks, in order: player of this game, game
    /// not over, square on the board, turn order, square free.
    pub fn play(&mut self, user: &Name, square: i64, now_ms: u64) -> Result<(), MoveError> {
        let mark = self.mark_of(user).ok_or(MoveError::NotAPlayer)?;
        let Some(turn) = self.turn() else {
            return Err(MoveError::GameOver(self.outcome()));
        };
        let index = usize::try_from(square).ok().filter(|s| *s < 9).ok_or(MoveError::NoSuchSquare(square))?;
        if mark != turn {
            return Err(MoveError::NotYourTurn(self.player(turn).clone()));
        }
        if self.board[index].is_some() {
            return Err(MoveError::Taken { row: index / 3 + 1, column: index % 3 + 1 });
        }
        self.board[index] = Some(mark);
        self.moves.push(Move { player: user.clone(), mark, square: index });
        self.updated_ms = now_ms;
        if let Some(line) = LINES.iter().find(|l| l.iter().all(|s| self.board[*s] == Some(mark))) {
            self.status = Status::Won;
            self.winner = Some(user.clone());
            self.line = Some(*line);
        } else if self.board.iter().all(Option::is_some) {
            self.status = Status::Draw;
        }
        debug_assert!(self.status != Status::Playing || self.turn() == Some(mark.other()));
        Ok(())
    }

    /// "alice won", "a draw" or "in progress", for messages.
    pub fn outcome(&self) -> String {
        match (&self.status, &self.winner) {
            (Status::Won, Some(w)) => format!("{w} won"),
            (Status::Draw, _) => "it ended in a draw".to_owned(),
            _ => "in progress".to_owned(),
        }
    }

    /// The JSON the pages render from: the stored fields plus `turn` (mark or null) and `next`
    /// (the player to move, or null) and `url`.
    pub fn view(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("games serialise");
        let turn = self.turn();
        value["turn"] = turn.map(|m| m.as_str()).into();
        value["next"] = turn.map(|m| self.player(m).as_str()).into();
        value["url"] = self.id.url().into();
        value
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("games serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    fn game() -> Game {
        Game::new(GameId::random(), name("ann"), name("bob"), 1)
    }

    #[test]
    fn ids_are_checked() {
        let id = GameId::random();
        assert_eq!(GameId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(GameId::parse("abc"), None);
        assert_eq!(GameId::parse(&"G".repeat(32)), None);
        assert_eq!(id.facility().as_str(), format!("game/{id}"));
        assert_eq!(id.url(), format!("/game/{id}"));
    }

    #[test]
    fn a_full_game_to_a_win() {
        let mut g = game();
        let (ann, bob) = (name("ann"), name("bob"));
        for (who, sq) in [(&ann, 0), (&bob, 3), (&ann, 1), (&bob, 4)] {
            g.play(who, sq, 2).unwrap();
        }
        assert_eq!(g.turn(), Some(Mark::X));
        g.play(&ann, 2, 3).unwrap();
        assert_eq!(g.status, Status::Won);
        assert_eq!(g.winner, Some(ann.clone()));
        assert_eq!(g.line, Some([0, 1, 2]));
        assert_eq!(g.turn(), None);
        assert_eq!(g.play(&bob, 5, 4), Err(MoveError::GameOver("ann won".into())));
        let view = g.view();
        assert_eq!(view["status"], "won");
        assert_eq!(view["board"][0], "X");
        assert_eq!(view["board"][8], serde_json::Value::Null);
        assert_eq!(view["next"], serde_json::Value::Null);
        let back: Game = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn refusals_in_order() {
        let mut g = game();
        let (ann, bob) = (name("ann"), name("bob"));
        assert_eq!(g.play(&name("eve"), 0, 2), Err(MoveError::NotAPlayer));
        assert_eq!(g.play(&bob, 0, 2), Err(MoveError::NotYourTurn(ann.clone())));
        assert_eq!(g.play(&ann, 9, 2), Err(MoveError::NoSuchSquare(9)));
        assert_eq!(g.play(&ann, -1, 2), Err(MoveError::NoSuchSquare(-1)));
        g.play(&ann, 4, 2).unwrap();
        assert_eq!(g.play(&bob, 4, 2), Err(MoveError::Taken { row: 2, column: 2 }));
        assert_eq!(
            MoveError::Taken { row: 2, column: 2 }.to_string(),
            "the square in row 2, column 2 is already taken"
        );
        assert_eq!(g.moves.len(), 1, "refused moves change nothing");
    }

    #[test]
    fn a_draw() {
        let mut g = game();
        let (ann, bob) = (name("ann"), name("bob"));
        // X O X / X O O / O X X
        for (i, sq) in [0, 1, 2, 4, 3, 5, 7, 6, 8].into_iter().enumerate() {
            let who = if i % 2 == 0 { &ann } else { &bob };
            g.play(who, sq, 2).unwrap();
        }
        assert_eq!(g.status, Status::Draw);
        assert_eq!(g.winner, None);
        assert_eq!(g.outcome(), "it ended in a draw");
    }
}
