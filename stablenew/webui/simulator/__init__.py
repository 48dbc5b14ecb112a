"""A faithful AUTOMATIC1111 1.10 API simulator (reference §9) for tests, benchmarks and the
embedded default. Run it with ``stablenew webui-sim`` or ``with SimServer(SimConfig(port=0))``.
"""

from stablenew.webui.simulator.app import create_app
from stablenew.webui.simulator.config import FaultConfig, SimConfig, TimingConfig
from stablenew.webui.simulator.inventory import Inventory, load_inventory
from stablenew.webui.simulator.server import SimServer, serve
from stablenew.webui.simulator.state import SimState

__all__ = [
    "FaultConfig",
    "Inventory",
    "SimConfig",
    "SimServer",
    "SimState",
    "TimingConfig",
    "create_app",
    "load_inventory",
    "serve",
]
