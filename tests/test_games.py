import pytest

from wmsim.errors import UserError
from wmsim.games import ATARI_100K, all_games, game_name, resolve_game, rom_id


def test_the_26_games_map_to_rom_ids_and_back():
    assert len(ATARI_100K) == 26
    for game in ATARI_100K:
        assert game in all_games(), game
        assert game_name(rom_id(game)) == game
    assert rom_id("MsPacman") == "ms_pacman"
    assert rom_id("UpNDown") == "up_n_down"
    assert rom_id("KungFuMaster") == "kung_fu_master"


def test_every_rom_ale_py_ships_resolves_and_loads():
    from ale_py import roms

    for game in all_games():
        assert roms.get_rom_path(rom_id(game)) is not None, game
        assert resolve_game(rom_id(game)) == game
    assert rom_id("TicTacToe3d") == "tic_tac_toe_3d"  # not a plain CamelCase split


@pytest.mark.parametrize("spelling", ["Breakout", "breakout", "BREAKOUT", "break_out"])
def test_resolve_accepts_any_case_and_snake_case(spelling):
    assert resolve_game(spelling) == "Breakout"


def test_resolve_names_ms_pacman_from_its_rom_id():
    assert resolve_game("ms_pacman") == "MsPacman"


def test_unknown_game_suggests_the_near_one():
    with pytest.raises(UserError, match="unknown game 'Breakot'; did you mean Breakout"):
        resolve_game("Breakot")


def test_unknown_game_without_near_match_lists_the_benchmark_games():
    with pytest.raises(UserError, match="Atari 100k games are Alien, Amidar"):
        resolve_game("Zzzzzz")
