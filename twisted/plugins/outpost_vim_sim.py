from twisted.application.service import ServiceMaker

vim_sim = ServiceMaker(
    "Outpost VIM simulator", "simulators.vim.tap", "A simulated VIM (infrastructure requests that take time and can fail) for tests and demos", "vim-sim"
)
