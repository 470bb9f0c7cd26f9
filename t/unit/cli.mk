# Unit test of ha-optoutctl's helpers (t/unit/cli_test.c): every CLI
# source but main.c, with OPENSSL_cleanse() and free() wrapped to see
# what is wiped and freed, and ASan/UBSan (LeakSanitizer on) where the
# compiler has them.
#
#   make -f t/unit/cli.mk check [BUILD=/tmp/clibuild] [SANITIZE=]

BUILD     ?= /tmp/clibuild
HERE      := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
CLIDIR    ?= $(abspath $(HERE)/../../cli)
CC        ?= cc

SANITIZE  ?= $(shell echo 'int main(void){return 0;}' \
               | $(CC) -x c -fsanitize=address,undefined -o /dev/null - \
                 2>/dev/null && echo -fsanitize=address,undefined)

CFLAGS    = -g -O1 -Wall -Wextra -Werror -std=gnu11 -pthread -I $(CLIDIR)
LIBS      = -lcurl -lcrypto -ljansson -lyaml -lpthread
WRAP      = -Wl,--wrap=OPENSSL_cleanse -Wl,--wrap=free

SRCS := $(filter-out $(CLIDIR)/main.c, $(wildcard $(CLIDIR)/*.c))
OBJS := $(SRCS:$(CLIDIR)/%.c=$(BUILD)/cli-%.o) $(BUILD)/cli_test.o

.PHONY: check

check: $(BUILD)/cli_test
	@echo "# running $<"
	@ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1} $(BUILD)/cli_test

$(BUILD)/cli-%.o: $(CLIDIR)/%.c $(wildcard $(CLIDIR)/*.h)
	@mkdir -p $(BUILD)
	$(CC) -c $(CFLAGS) $(SANITIZE) $< -o $@

$(BUILD)/cli_test.o: $(HERE)/cli_test.c $(HERE)/tap.h $(wildcard $(CLIDIR)/*.h)
	@mkdir -p $(BUILD)
	$(CC) -c $(CFLAGS) $(SANITIZE) $< -o $@

$(BUILD)/cli_test: $(OBJS)
	$(CC) $(SANITIZE) $(WRAP) $(OBJS) $(LIBS) -o $@
