"""ament_python build of headpose_ros (colcon on a robot, pip -e in scripts/setup.sh)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "headpose_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="headpose_ros maintainers",
    maintainer_email="maintainers@headpose-ros.org",
    description="Multi-task head pose, landmarks and visibility (MNN+OR) for ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "headpose_node = headpose_ros.node:main",
            "headpose_demo = headpose_ros.demo:main",
            "headpose_replay = headpose_ros.replay:main",
            "headpose_run = headpose_ros.tools.run_media:main",
            "headpose_bag = headpose_ros.tools.run_bag:main",
        ],
    },
)
