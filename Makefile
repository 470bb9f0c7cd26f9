# ngx_ha_optout_module: deps, build, test, demo

SHELL := /bin/bash

# nginx sources to build against.  Debian's nginx-dev tree (it has
# conf_flags: Debian's configure arguments) or a plain nginx.org source
# tree of the exact version of the nginx that will load the module:
#   make NGX_SRC=/path/to/nginx-1.30.4
# configures it with NGX_CONFIGURE (at least --with-compat, as nginx.org
# packages are built; add the package's other "nginx -V" arguments if you
# like) and builds the two modules only (make modules).  NGX_CC=clang
# picks the compiler.
NGX_SRC   ?= /usr/share/nginx/src
NGX_CONFIGURE ?= --with-compat --with-stream
NGX_CC    ?=
BUILD     ?= $(CURDIR)/build
# nginx's own flags keep -Wno-unused-parameter (callbacks): repeat it after
# -Wextra, which turns it back on with clang
MOD_CFLAGS = -g -O2 -fPIC -Wall -Wextra -Wno-unused-parameter -Werror
MODULE     = $(BUILD)/ngx_http_ha_optout_module.so
STREAM_MODULE = $(BUILD)/ngx_stream_ha_optout_module.so
CLI        = $(BUILD)/ha-optoutctl
PREFIX    ?= /usr/local
PROVE_JOBS ?= 2

# Debian packages a fresh machine lacks: build, run, and test.
DEPS = nginx-core nginx-dev libnginx-mod-stream libyaml-dev libjansson-dev \
       libssl-dev libcurl4-openssl-dev pkg-config curl perl \
       libtest-simple-perl prometheus prometheus-alertmanager chromium \
       redis-server wrk clang libclang-rt-14-dev \
       debhelper dpkg-dev fakeroot lintian logrotate \
       python3-jwt python3-cryptography nodejs etcd-server etcd-client

# node's jose for t/interop_jose.t, pinned by t/interop/package-lock.json
INTEROP   = t/interop
JOSE      = $(INTEROP)/node_modules/.package-lock.json

SRCS = $(wildcard ngx_ha_optout_module/*.c ngx_ha_optout_module/*.h) config

.PHONY: all deps interop module cli test demo bench bench-scale bench-fleet \
        install clean fuzz test-asan deb test-deb test-compat FORCE

all: module cli

deps:
	@missing=""; for p in $(DEPS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	        || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@# Debian's nodejs comes without npm; NodeSource's nodejs includes it
	@command -v npm >/dev/null || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	@$(MAKE) -s interop

interop: $(JOSE)

$(JOSE): $(INTEROP)/package.json $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error

# reconfigure when the sources or the flags change, not on every make
NGX_STAMP = $(NGX_SRC) | $(NGX_CONFIGURE) | $(NGX_CC) | $(MOD_CFLAGS)

$(BUILD)/ngx-src.stamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(NGX_STAMP)' | cmp -s - $@ || echo '$(NGX_STAMP)' > $@

$(BUILD)/Makefile: config $(BUILD)/ngx-src.stamp
	@test -d $(NGX_SRC) || { echo "no $(NGX_SRC): run 'make deps'"; exit 1; }
	mkdir -p $(BUILD)
	cd $(NGX_SRC) && \
	if [ -f conf_flags ]; then \
	    . ./conf_flags && set -- "$${NGX_CONF_FLAGS[@]}" --with-stream=dynamic; \
	else \
	    set -- $(NGX_CONFIGURE); \
	fi; \
	if [ -x ./configure ]; then c=./configure; else c=auto/configure; fi; \
	$$c $(if $(NGX_CC),--with-cc=$(NGX_CC)) \
	    --with-cc-opt="$(MOD_CFLAGS)" --with-ld-opt="-fPIC" "$$@" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(BUILD) > $(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

module: $(MODULE)

# only our two objects (make modules): nginx-dev ships headers, not the
# stream core sources
$(MODULE): $(BUILD)/Makefile $(SRCS)
	$(MAKE) -f $(BUILD)/Makefile -C $(NGX_SRC) $(MODULE) $(STREAM_MODULE)
	@ls -l $(MODULE) $(STREAM_MODULE)

cli: $(CLI)

$(CLI): $(wildcard cli/*.c cli/*.h) cli/Makefile
	$(MAKE) -C cli BUILD=$(BUILD)

test: deps all
	prove -j$(PROVE_JOBS) -I t/lib t/

fuzz:
	$(MAKE) -C fuzz

# nginx.org sources (a release tarball or a git export): nginx built into a
# temporary prefix with --with-compat --with-stream, the module against it,
# then all of t/ with that nginx (stream compiled in: no ngx_stream_module.so)
#   make test-compat NGX_TARBALL=../shared/nginx-src/nginx-1.31.4.tar.gz
test-compat: cli
	@test -n "$(NGX_TARBALL)" || { echo "usage: make test-compat NGX_TARBALL=nginx-x.y.z.tar.gz"; exit 1; }
	PROVE_JOBS=$(PROVE_JOBS) NGX_CC=$(NGX_CC) .ci/test-compat $(NGX_TARBALL)

# the module with ASan+UBSan in build-asan/, then all of t/ (docs/reliability.md)
test-asan: deps all
	BUILD_ASAN=$(CURDIR)/build-asan NGX_SRC=$(NGX_SRC) PROVE_JOBS=$(PROVE_JOBS) \
	    ./fuzz/test-asan.sh

demo: deps all
	./demo/run.sh

bench: deps all
	bench/run.sh

# only the scale part of the bench (run.sh runs it too), docs/benchmarks.md
bench-scale: deps all
	bench/scale.sh

# the fleet part alone (etcd, 10 nginx + agents; docs/benchmarks.md)
bench-fleet: deps all
	perl bench/fleet.pl

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/usr/lib/nginx/modules
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/ha-optoutctl
	install -m 644 $(MODULE) $(STREAM_MODULE) $(DESTDIR)/usr/lib/nginx/modules/

# Debian packages (debian/, docs/packaging.md) into build/deb/, built from
# a copy of the tree so that the tree itself stays clean
DEB_DIR = $(BUILD)/deb
# what 'make deb' and 'make test-deb' need (all of them are in DEPS too)
DEB_DEPS = nginx-dev libnginx-mod-stream libyaml-dev libjansson-dev \
           libssl-dev libcurl4-openssl-dev debhelper dpkg-dev fakeroot lintian

deb:
	@$(MAKE) -s deps DEPS="$(DEB_DEPS)"
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	cd $(CURDIR) && if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	    git ls-files -z -co --exclude-standard \
	        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null; \
	else \
	    tar --exclude=./build --exclude=./build-asan --exclude=./.git \
	        --exclude='*.o' -cf - .; \
	fi | tar -C $(DEB_DIR)/src -xf -
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc > ../build.log 2>&1 \
	    || { tail -30 ../build.log; exit 1; }
	rm -rf $(DEB_DIR)/src
	cd $(DEB_DIR) && lintian --info --display-info --pedantic *.changes \
	    | tee lintian.txt; ! grep -q '^E: ' lintian.txt
	mkdir -p $(DEB_DIR)/debug && mv $(DEB_DIR)/*-dbgsym_*.deb $(DEB_DIR)/debug/
	@ls -l $(DEB_DIR)/*.deb

# installs, exercises and purges the packages on this machine (root)
test-deb: deb
	@$(MAKE) -s deps DEPS="logrotate curl openssl perl"
	t/deb/run.sh $(DEB_DIR)

clean:
	rm -rf $(BUILD)
